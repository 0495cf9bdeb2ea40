"""The learner on the closed loop's data: the true value of the greedy policy fitted on the loop's bootstrap training
set, per learner setting, over shop seeds, XGBoost seeds and both shops (issue #12).

    .venv/bin/python -m bench.loop_learner [--shop-seeds 7,8,9,10,11,12] [--seeds 2] [--settings NAME,...] [--no-write]
    .venv/bin/python -m bench.loop_learner --demo [--seeds 3]    # the same settings on `make demo`'s data

Each shop seed gets the loop's bootstrap once: `hyperlift_job` on a fresh home under
`$HYPERLIFT_HOME/loop_learner/default-<seed>` (10,000 users × 21 days, as `make loop` starts), run in a child
process (`--build-home`; MLflow and Dagster keep handles on a home's SQLite stores). The `late_weibull` shop differs
from `default` only in its purchase delays, and its bootstrap training set is identical row for row (every delay of
the bootstrap falls inside the 72 h window): one fit is scored under both shops' truth. Every cell is fitted exactly
as the pipeline fits (`training.train.train_uplift`, with each of its recalibrations); its greedy policy (argmax
of uplift − unit cost, `no_action` = 0) is applied to the consented users' latest features and scored with the
simulator's exact expected net value (72 h window), per decision: each user weighted by their session rate, as the
loop's decisions arrive (and, second figure, per user). Nothing the model sees comes from the simulator's truth; the
truth only scores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bench.learner_settings import FEATURES, WINDOW_HOURS, demo_inputs, latest_features
from bench.report import machine_line, write_section
from dagster_project.resources.data_lake import ACTION_CATALOGUE, TRAINING_SET
from feature_repo.pseudonyms import with_raw_ids
from infra import keys
from infra.settings import HyperliftSettings
from simulator import ACTION_IDS, Shop, build_shop, expected_revenue
from simulator.config import shop_config
from training.learners import MultiArmUpliftLearner, SLearner, TwoPartLearner
from training.train import greedy_actions, train_uplift

TITLE = "## The learner on the loop's data: true policy value over shop seeds (`.venv/bin/python -m bench.loop_learner`)"
USERS, HISTORY_DAYS = 10_000, 21  # the loop's bootstrap (demo.loop's defaults)
SHOPS = ("default", "late_weibull")

def _s(seed: int) -> MultiArmUpliftLearner:
    return SLearner(random_state=seed, n_jobs=1)


def _two_part(seed: int) -> MultiArmUpliftLearner:
    return TwoPartLearner(random_state=seed, n_jobs=1)


SETTINGS: dict[str, tuple[Callable[[int], MultiArmUpliftLearner], str]] = {
    "S-learner linear recalibration (the default before)": (_s, "linear"),
    "S-learner shrunk recalibration": (_s, "shrunk"),
    "S-learner no recalibration": (_s, "none"),
    "two-part linear recalibration": (_two_part, "linear"),
    "two-part shrunk recalibration": (_two_part, "shrunk"),
    "two-part no recalibration": (_two_part, "none"),
}
"""Learner (by XGBoost seed) and `train_uplift` recalibration of each setting."""


def home_for(seed: int) -> Path:
    """The bootstrap home of one shop seed."""
    return HyperliftSettings().home / "loop_learner" / f"default-{seed}"


def settings_for(seed: int) -> HyperliftSettings:
    """The settings of one shop seed's bootstrap home (its lake, and its key file: the lake's pseudonym key)."""
    home = home_for(seed)
    return HyperliftSettings(home=home, reports_dir=home / "reports")


def build_home(seed: int) -> None:
    """The loop's bootstrap (demo.loop step 1) on a fresh home: hyperlift_job on the shop's history."""
    from demo.run import run_pipeline
    from infra.launch import project_environment

    shutil.rmtree(home_for(seed), ignore_errors=True)
    settings = settings_for(seed)
    with project_environment(settings) as env:
        os.environ.update(env)
        run_pipeline(settings, env["REDIS_URL"], shop_config("default", n_users=USERS, n_days=HISTORY_DAYS, seed=seed))


def loop_inputs(seed: int, known: pd.Series) -> tuple[pd.DataFrame, dict[str, float], pd.DataFrame]:
    """A bootstrap home's training set (by pseudonym, as the pipeline fits it), unit costs and consented users'
    latest features (by raw id, among the shop's `known` users); the home is built first (child process) if it has
    no training set yet."""
    settings = settings_for(seed)
    data_dir = settings.data_dir
    if not (data_dir / TRAINING_SET).exists():
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bench.loop_learner", "--build-home", str(seed)], check=True,
                       stdout=subprocess.DEVNULL)
        print(f"  built the bootstrap home of seed {seed} in {time.perf_counter() - started:.0f} s", flush=True)
    data = pd.read_parquet(data_dir / TRAINING_SET)
    catalogue = pd.read_parquet(data_dir / ACTION_CATALOGUE)
    costs = dict(zip(catalogue["action_id"], catalogue["unit_cost"].astype(float)))
    users = latest_features(settings, known)
    return data, costs, users[users["consent_marketing"] == 1].reset_index(drop=True)


class Truth:
    """A shop's exact incremental net value v (users × ACTION_IDS) and each user's session rate (the weight)."""

    def __init__(self, world: Shop, user_ids: np.ndarray, costs: dict[str, float]):
        net = expected_revenue(world, user_ids, WINDOW_HOURS) - np.array([costs.get(a, 0.0) for a in ACTION_IDS])
        self.v = net - net[:, [0]]
        self.weight = world.activity[user_ids]

    def value(self, actions: np.ndarray) -> tuple[float, float]:
        """(per decision, per user) true incremental net value of giving each user `actions`."""
        got = self.v[np.arange(len(self.v)), [ACTION_IDS.index(a) for a in actions]]
        return float(np.average(got, weights=self.weight)), float(got.mean())

    def references(self) -> dict[str, float]:
        """Oracle and best single action, per decision."""
        mean = np.average(self.v, axis=0, weights=self.weight)
        return {"oracle": float(np.average(self.v.max(axis=1), weights=self.weight)), "best_single": float(mean.max())}


def fit_actions(name: str, seed: int, data: pd.DataFrame, costs: dict[str, float], users: pd.DataFrame) -> np.ndarray:
    """The greedy actions of setting `name` (XGBoost seed `seed`), fitted as the pipeline fits."""
    make, recalibration = SETTINGS[name]
    trained = train_uplift(data, FEATURES, costs, make(seed), recalibration=recalibration)
    for figure in trained.figures.values():
        plt.close(figure)
    return greedy_actions(trained.model, trained.model.uplift(users[FEATURES].to_numpy(np.float32)))


def noise_free_actions(data: pd.DataFrame, costs: dict[str, float], users: pd.DataFrame, world: Shop,
                       key_path: Path) -> np.ndarray:
    """Reference only: the default S-learner fitted as the pipeline fits, on the same rows with each label replaced
    by its expectation under the simulator (E[revenue | user, logged action], 72 h): what the learner would find
    without the purchases' noise. Never a candidate: it reads the truth, by the raw ids behind the rows' pseudonyms
    (under the key file `key_path` of the home the rows came from)."""
    logged_users = with_raw_ids(data[["user_id"]], world.users["user_id"], key_path)["user_id"].to_numpy()
    expected = expected_revenue(world, logged_users, WINDOW_HOURS)
    logged = [ACTION_IDS.index(a) for a in data["action_id"]]
    smooth = data.assign(label_revenue=expected[np.arange(len(data)), logged])
    trained = train_uplift(smooth, FEATURES, costs, SLearner(n_jobs=1))
    for figure in trained.figures.values():
        plt.close(figure)
    return greedy_actions(trained.model, trained.model.uplift(users[FEATURES].to_numpy(np.float32)))


def main(argv: list[str] | None = None) -> int:
    """Fit every setting per (shop seed, XGBoost seed); print and record the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.loop_learner")
    parser.add_argument("--shop-seeds", default="7,8,9,10,11,12")
    parser.add_argument("--seeds", type=int, default=2, help="XGBoost seeds 0 … seeds−1 per cell")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="names of SETTINGS, comma-separated")
    parser.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    parser.add_argument("--demo", action="store_true", help="score the settings on `make demo`'s data instead")
    parser.add_argument("--build-home", type=int, metavar="SEED", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build_home is not None:
        build_home(args.build_home)
        return 0
    if args.demo:
        return demo(args)
    machine = machine_line()
    started = time.perf_counter()
    names = args.settings.split(",")
    shop_seeds = [int(k) for k in args.shop_seeds.split(",")]
    per_decision: dict[tuple[str, str], list[float]] = {}  # (setting, shop) → one value per (shop seed, XGB seed)
    per_user: dict[tuple[str, str], list[float]] = {}
    refs: dict[str, list[dict[str, float]]] = {shop: [] for shop in SHOPS}
    rows = []
    for shop_seed in shop_seeds:
        worlds = {shop: build_shop(shop_config(shop, n_users=USERS, n_days=HISTORY_DAYS, seed=shop_seed))
                  for shop in SHOPS}
        data, costs, users = loop_inputs(shop_seed, worlds[SHOPS[0]].users["user_id"])
        key_path = keys.key_file(settings_for(shop_seed))
        truths = {shop: Truth(world, users["user_id"].to_numpy(), costs) for shop, world in worlds.items()}
        for shop, truth in truths.items():
            refs[shop].append(truth.references())
            noise_free = noise_free_actions(data, costs, users, worlds[shop], key_path)
            refs[shop][-1]["noise_free"] = truth.value(noise_free)[0]
        rows.append(len(data))
        print(f"seed {shop_seed}: {len(data)} training rows, {len(users)} consented users; "
              f"{ {s: {k: round(x, 3) for k, x in t.references().items()} for s, t in truths.items()} }", flush=True)
        for name in names:
            for seed in range(args.seeds):
                actions = fit_actions(name, seed, data, costs, users)
                for shop, truth in truths.items():
                    decision, user = truth.value(actions)
                    per_decision.setdefault((name, shop), []).append(decision)
                    per_user.setdefault((name, shop), []).append(user)
                print(f"  {name}, XGBoost seed {seed}: " + ", ".join(
                    f"{shop} {per_decision[(name, shop)][-1]:.3f}" for shop in SHOPS), flush=True)
    text = table(args, machine, names, shop_seeds, per_decision, per_user, refs, rows,
                 time.perf_counter() - started)
    print(text)
    if not args.no_write:
        write_section(TITLE, text)
    return 0


DEMO_TITLE = ("## The learner on the demo's data: the same settings (`.venv/bin/python -m bench.loop_learner --demo`)")


def demo(args: argparse.Namespace) -> int:
    """The settings on `make demo`'s training set and shop (the check that a change for the loop costs nothing
    there)."""
    machine = machine_line()
    started = time.perf_counter()
    settings = HyperliftSettings()
    data, costs, users, shop = demo_inputs(settings)
    users = users.reset_index(drop=True)
    truth = Truth(shop, users["user_id"].to_numpy(), costs)
    lines = []
    for name in args.settings.split(","):
        decision, user = [], []
        for seed in range(args.seeds):
            d, u = truth.value(fit_actions(name, seed, data, costs, users))
            decision.append(d)
            user.append(u)
            print(f"  {name}, XGBoost seed {seed}: {d:.3f} per decision, {u:.3f} per user", flush=True)
        lines.append(f"| {name} | {_cell(decision)} | {_cell(user)} | {', '.join(f'{x:.3f}' for x in user)} |")
    ref = truth.references()
    text = "\n".join([
        DEMO_TITLE, "",
        f"`.venv/bin/python -m bench.loop_learner --demo --seeds {args.seeds}` after `make demo` ({len(data):,} "
        f"training rows, {len(users):,} consented users scored); {machine}; {time.perf_counter() - started:.0f} s. "
        "True incremental net value of the greedy policy, mean (range) over XGBoost seeds; oracle "
        f"{ref['oracle']:.3f} and best single action {ref['best_single']:.3f} per decision:", "",
        "| setting | per decision | per user | per user, by seed |", "|---|---|---|---|", *lines, "",
    ])
    print(text)
    if not args.no_write:
        write_section(DEMO_TITLE, text)
    return 0


def _cell(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ({min(values):.3f}–{max(values):.3f})"


def table(args, machine, names, shop_seeds, per_decision, per_user, refs, rows, seconds) -> str:
    """The markdown section: per setting and shop, mean (range) over (shop seed, XGBoost seed), and per shop seed."""
    n = args.seeds
    head = " | ".join(f"seed {k}" for k in shop_seeds)
    lines = [
        TITLE, "",
        f"`.venv/bin/python -m bench.loop_learner --shop-seeds {args.shop_seeds} --seeds {n}`; {machine}; "
        f"{seconds:.0f} s. The loop's bootstrap ({USERS:,} users × {HISTORY_DAYS} days) of shop seeds "
        f"{args.shop_seeds} ({min(rows):,}–{max(rows):,} training rows); each setting fitted with `train_uplift` "
        f"under {n} XGBoost seeds per shop seed; greedy policy on the consented users' latest features. True "
        "incremental net value per decision (users weighted by their session rate), mean (range) over the "
        f"{len(shop_seeds) * n} fits, then the mean per shop seed; last column per user:", "",
        f"| setting | shop | per decision | {head} | per user |",
        "|---|---|---|" + "---|" * len(shop_seeds) + "---|",
    ]
    for shop in SHOPS:
        for name in names:
            v = per_decision[(name, shop)]
            by_seed = " | ".join(f"{np.mean(v[i * n:(i + 1) * n]):.3f}" for i in range(len(shop_seeds)))
            lines.append(f"| {name} | {shop} | {_cell(v)} | {by_seed} | {_cell(per_user[(name, shop)])} |")
        labels = {"best_single": "reference: best single action",
                  "noise_free": "reference: S-learner fitted to the expected labels (reads the truth)",
                  "oracle": "reference: oracle"}
        for ref, label in labels.items():
            values = [r[ref] for r in refs[shop]]
            lines.append(f"| {label} | {shop} | {_cell(values)} | " + " | ".join(f"{x:.3f}" for x in values) + " | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
