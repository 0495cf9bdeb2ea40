"""Uplift learners and model selection on Nie & Wager's setups A–D: holdout MSE of τ, over seeds.

    .venv/bin/python -m bench.learner_setups                 # n = 10,000, 5 seeds; writes its docs section
    .venv/bin/python -m bench.learner_setups --n 4000 --seeds 2 --no-write

Per (setup, seed): a training draw and an independent holdout draw of n rows each (`simulator.nie_wager`, d = 8,
σ = 1). Every single meta-learner (S, T, X, R, DR × XGBoost, linear; `training.learners.selection.
default_candidates`, default hyper-parameters, squared error) is fitted on the training draw; `CausalModelSelector`
(cross-fitted DR loss, 3 folds) chooses among the same candidates on the same rows and refits its winner. MSE of τ is
measured on the holdout against the true τ. The table shows the mean over seeds; "selected / best" divides the
selector's mean MSE by that of the single learner with the smallest mean MSE on the setup (the target: ≤ 1.10).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from sklearn.base import clone

from bench.report import machine_line, write_section
from simulator.nie_wager import CONTROL, SETUPS, nie_wager
from training.learners.selection import CausalModelSelector, default_candidates

HEADING = "## Uplift learners on Nie & Wager's setups A–D (`.venv/bin/python -m bench.learner_setups`)"


def holdout_mse(setup: str, seed: int, n: int) -> dict[str, float | str]:
    """Holdout MSE of τ of every candidate and of the selector on one (setup, seed); `chosen` names the winner."""
    train, test = nie_wager(setup, n=n, seed=seed), nie_wager(setup, n=n, seed=10_000 + seed)
    candidates = default_candidates(control=CONTROL, outcome="continuous", random_state=seed)
    row: dict[str, float | str] = {}
    for name, learner in candidates.items():
        fitted = clone(learner).fit(train.X, train.treatment, train.y, propensity=train.propensity)
        row[name] = float(np.mean((fitted.predict_uplift(test.X)[:, 0] - test.tau) ** 2))
    selector = CausalModelSelector(candidates=candidates, control=CONTROL, outcome="continuous", random_state=seed)
    selector.fit(train.X, train.treatment, train.y, propensity=train.propensity)
    row["selected"] = float(np.mean((selector.predict_uplift(test.X)[:, 0] - test.tau) ** 2))
    row["chosen"] = selector.best_name_
    return row


def setup_table(n: int, seeds: int, progress: bool = True) -> pd.DataFrame:
    """One row per (setup, seed): every candidate's MSE, the selector's and its choice."""
    rows = []
    for setup in SETUPS:
        for seed in range(seeds):
            started = time.perf_counter()
            rows.append({"setup": setup, "seed": seed, **holdout_mse(setup, seed, n)})
            if progress:
                print(f"  setup {setup} seed {seed}: chose {rows[-1]['chosen']} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per setup: mean MSE of each single learner and of the selector, the best single one and the ratio."""
    singles = [c for c in table.columns if c not in ("setup", "seed", "selected", "chosen")]
    means = table.groupby("setup")[[*singles, "selected"]].mean()
    best = means[singles].idxmin(axis=1)
    means["best_single"] = best
    means["selected_over_best"] = [means.loc[s, "selected"] / means.loc[s, best[s]] for s in means.index]
    means["chosen"] = table.groupby("setup")["chosen"].agg(lambda c: ", ".join(f"{k}×{v}" for k, v in c.value_counts().items()))
    return means


def markdown(summary_frame: pd.DataFrame, n: int, seeds: int, seconds: float) -> str:
    singles = [c for c in summary_frame.columns
               if c not in ("selected", "best_single", "selected_over_best", "chosen")]
    lines = [
        HEADING, "",
        f"`.venv/bin/python -m bench.learner_setups --n {n} --seeds {seeds}`; {machine_line()}; {seconds:.0f} s. "
        f"Holdout MSE of τ, mean over {seeds} seeds (train and holdout n = {n:,} each, d = 8, σ = 1):", "",
        "| learner | " + " | ".join(f"setup {s}" for s in summary_frame.index) + " |",
        "|---|" + "---|" * len(summary_frame.index),
    ]
    for name in singles:
        cells = []
        for s in summary_frame.index:
            value = summary_frame.loc[s, name]
            cells.append(f"**{value:.4f}**" if summary_frame.loc[s, "best_single"] == name else f"{value:.4f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| **selected (DR loss)** | " + " | ".join(f"{v:.4f}" for v in summary_frame["selected"]) + " |")
    lines.append("| selected / best single | " + " | ".join(
        f"{v:.2f}" for v in summary_frame["selected_over_best"]) + " |")
    lines.append("| chosen (seeds) | " + " | ".join(summary_frame["chosen"]) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    args = parser.parse_args()
    started = time.perf_counter()
    print(f"fitting 10 learners and the selector on 4 setups × {args.seeds} seeds (n = {args.n:,}) ...", flush=True)
    text = markdown(summary(setup_table(args.n, args.seeds)), args.n, args.seeds, time.perf_counter() - started)
    print(text)
    if not args.no_write:
        write_section(HEADING, text)
        print("written to docs/benchmarks.md")


if __name__ == "__main__":
    main()
