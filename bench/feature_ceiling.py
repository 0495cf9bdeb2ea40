"""How much of the oracle's value the features can see: learners fitted to the TRUE uplift, with and without traits.

Run after `make demo` (it reads the demo's latest features from HYPERLIFT_HOME):
    .venv/bin/python -m bench.feature_ceiling [--no-write]

The simulator knows each user's expected net value under every action (72 h window). Here an XGBoost regressor per
action is fitted to the TRUE incremental net value on half of the consented users (no noise, no logging policy, no
exploration: the best any learner could do with these inputs) and its greedy policy is scored on the other half.
Rows: the serving features alone (the feature-limited ceiling of #12's loop), and the same features plus one or all
of the latent traits the simulator never shows (price sensitivity, base purchase logit, activity, basket, taste),
to see which hidden trait the features miss. R² per action is the share of the true uplift's variance the fit
explains on the held-out half.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from xgboost import XGBRegressor

from bench.learner_settings import FEATURES, WINDOW_HOURS, latest_features
from bench.report import machine_line, write_section
from dagster_project.resources.data_lake import ACTION_CATALOGUE
from infra.settings import HyperliftSettings
from simulator import ACTION_IDS, ShopConfig, build_shop, expected_revenue

HEADING = "## Feature ceiling: what the features can see of the true uplift (`.venv/bin/python -m bench.feature_ceiling`)"


def held_out_value(X: np.ndarray, uplift: np.ndarray, train: np.ndarray) -> tuple[float, list[float]]:
    """Greedy value on ~train of per-action regressors fitted to the true uplift on train; R² per action."""
    test = ~train
    predicted = np.zeros((test.sum(), uplift.shape[1]))
    r2 = []
    for a in range(1, uplift.shape[1]):
        model = XGBRegressor(n_estimators=300, max_depth=4, learning_rate=0.05, min_child_weight=5,
                             tree_method="hist", n_jobs=2, random_state=0).fit(X[train], uplift[train, a])
        predicted[:, a] = model.predict(X[test])
        r2.append(float(1 - np.mean((predicted[:, a] - uplift[test, a]) ** 2) / uplift[test, a].var()))
    choice = np.where(predicted.max(axis=1) > 0, predicted.argmax(axis=1), 0)
    return float(uplift[test][np.arange(test.sum()), choice].mean()), r2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    args = parser.parse_args()
    started = time.perf_counter()
    settings = HyperliftSettings()
    catalogue = pd.read_parquet(settings.data_dir / ACTION_CATALOGUE)
    costs = dict(zip(catalogue["action_id"], catalogue["unit_cost"].astype(float)))
    shop = build_shop(ShopConfig.from_env())
    users = latest_features(settings, shop.users["user_id"])
    users = users[users["consent_marketing"] == 1].reset_index(drop=True)
    ids = users["user_id"].to_numpy()
    net = expected_revenue(shop, ids, WINDOW_HOURS) - np.array([costs.get(a, 0.0) for a in ACTION_IDS])
    uplift = net - net[:, [0]]
    train = np.random.default_rng(0).random(len(ids)) < 0.5
    oracle = float(uplift[~train].max(axis=1).clip(0).mean())
    features = users[FEATURES].to_numpy(np.float32)
    traits = {
        "price sensitivity": shop.price_sensitivity[ids],
        "base purchase logit": shop.base_logit[ids],
        "activity": shop.activity[ids],
        "basket value (log)": np.log(shop.basket_value[ids]),
    }
    rows = [("serving features (the feature-limited ceiling)", features)]
    rows += [(f"features + true {name}", np.column_stack([features, value])) for name, value in traits.items()]
    rows.append(("features + every trait (and taste)",
                 np.column_stack([features, *traits.values(), shop.taste[ids]])))
    lines = [
        HEADING, "",
        f"`.venv/bin/python -m bench.feature_ceiling`; {machine_line()}. Demo shop ({len(ids):,} consented users, "
        f"fitted on half, scored on the other half); oracle (best action per user) {oracle:.3f} per user.", "",
        "| inputs | value / user | share of oracle | " + " | ".join(f"R² {a}" for a in ACTION_IDS[1:]) + " |",
        "|---|---|---|" + "---|" * (len(ACTION_IDS) - 1),
    ]
    for label, X in rows:
        value, r2 = held_out_value(X, uplift, train)
        lines.append(f"| {label} | {value:.3f} | {value / oracle:.0%} | " + " | ".join(f"{r:.2f}" for r in r2) + " |")
        print(lines[-1], flush=True)
    lines.append("")
    lines.append(f"{time.perf_counter() - started:.0f} s.")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        write_section(HEADING, text)
        print("written to docs/benchmarks.md")


if __name__ == "__main__":
    main()
