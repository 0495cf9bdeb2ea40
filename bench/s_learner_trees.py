"""How many trees the S-learner needs: the true value of its greedy policy over XGBoost seeds, per tree count.

Run after `make demo` (it reads the demo's training set and features from HYPERLIFT_HOME):
    .venv/bin/python -m bench.s_learner_trees [--trees 200,400,600,800] [--seeds 6]
Each cell is fitted exactly as the `uplift_challenger` asset fits (`training.train.train_uplift`), with every
setting of the S-learner at its default except `n_estimators` and `random_state` (the XGBoost seed: row and column
subsampling). The greedy policy is scored as in `bench.learner_settings` (the simulator's ground truth, consented
users' latest features, 72 h window). The spread over seeds is the point: a default whose value depends on the seed
makes every retrain of the loop a different policy.
"""

from __future__ import annotations

import argparse
import time

import matplotlib.pyplot as plt
import numpy as np

from bench.learner_settings import FEATURES, WINDOW_HOURS, demo_inputs
from bench.report import machine_line, write_section
from infra.settings import HyperliftSettings
from simulator import policy_value
from training.learners import SLearner
from training.train import greedy_actions, train_uplift

TITLE = "## S-learner trees: true policy value over XGBoost seeds (`.venv/bin/python -m bench.s_learner_trees`)"


def main(argv: list[str] | None = None) -> int:
    """Fit the S-learner per (tree count, seed); print and record the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.s_learner_trees")
    parser.add_argument("--trees", default="200,400,600,800", help="tree counts, comma-separated")
    parser.add_argument("--seeds", type=int, default=6, help="XGBoost seeds 0 … seeds−1 per tree count")
    args = parser.parse_args(argv)
    machine = machine_line()
    data, costs, users, shop = demo_inputs(HyperliftSettings())
    rows = []
    for trees in [int(t) for t in args.trees.split(",")]:
        started, values = time.perf_counter(), []
        for seed in range(args.seeds):
            trained = train_uplift(data, FEATURES, costs, SLearner(n_estimators=trees, random_state=seed))
            for figure in trained.figures.values():
                plt.close(figure)
            uplift = trained.model.uplift(users[FEATURES].to_numpy(np.float32))
            value = policy_value(shop, users["user_id"].to_numpy(), greedy_actions(trained.model, uplift), WINDOW_HOURS)
            values.append(value["policy"]["incremental_net_value_per_user"])
            print(f"  {trees} trees, seed {seed}: {values[-1]:.3f}", flush=True)
        seconds = (time.perf_counter() - started) / args.seeds
        rows.append(f"| {trees} | {np.mean(values):.3f} | {min(values):.3f}–{max(values):.3f} | "
                    f"{np.std(values, ddof=1):.3f} | {', '.join(f'{v:.3f}' for v in values)} | {seconds:.0f} |")
    text = "\n".join([
        TITLE, "",
        f"`.venv/bin/python -m bench.s_learner_trees --trees {args.trees} --seeds {args.seeds}` after `make demo` "
        f"({len(data)} training rows, {len(users)} consented users scored); {machine}. True incremental net value "
        "per user of the greedy policy (depth 2, learning rate 0.05, min_child_weight 50, subsample 0.8: the "
        "S-learner's defaults but the tree count), one fit per XGBoost seed:", "",
        "| trees | mean | range | sd | per seed | s per fit (train_uplift) |", "|---|---|---|---|---|---|", *rows, "",
    ])
    write_section(TITLE, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
