"""Learners and T-learner settings → true policy value and PEHE on the simulated shop, next to holdout metrics.

Run after `make demo` (it reads the demo's training set and features from HYPERLIFT_HOME):
    .venv/bin/python -m bench.learner_settings
Each row is fitted exactly as the uplift_challenger asset fits (training.train.train_uplift: cross-fitted uplift
recalibration, user-level holdout). The greedy policy (argmax of uplift − unit cost, no_action = 0) is applied to
every consented user's latest features and scored with the simulator's ground truth: expected incremental net
value per user (72 h window) and PEHE of the predicted uplift against the true expected incremental revenue.
"""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from dagster_project.resources.data_lake import ACTION_CATALOGUE, TRAINING_SET, USER_ACTIVITY, USER_PROFILE
from feature_repo.pseudonyms import with_raw_ids
from feature_repo.transforms import ACTIVITY_FEATURES, PROFILE_FEATURES
from infra import keys
from infra.settings import HyperliftSettings
from simulator import ACTION_IDS, Shop, ShopConfig, build_shop, expected_revenue, policy_value
from training.learners import LEARNERS
from training.metrics import pehe
from training.train import greedy_actions, train_uplift

FEATURES = [*ACTIVITY_FEATURES, *PROFILE_FEATURES]
WINDOW_HOURS = 72.0
ROWS: dict[str, tuple[str, dict]] = {
    "T: depth 4, 300 trees, mcw 5": ("t_learner", dict(max_depth=4, n_estimators=300, min_child_weight=5.0)),
    "T: depth 6, 500 trees, mcw 5": ("t_learner", dict(max_depth=6, n_estimators=500, min_child_weight=5.0)),
    "T: depth 2, 200 trees, mcw 50 (default)": ("t_learner", {}),
    "T: depth 1, 300 trees, mcw 50": ("t_learner", dict(max_depth=1, n_estimators=300)),
    "S (defaults)": ("s_learner", {}),
    "X (defaults)": ("x_learner", {}),
    "DR (defaults)": ("dr_learner", {}),
    "DR: 100 trees, lr 0.03, mcw 500": ("dr_learner", dict(n_estimators=100, learning_rate=0.03, min_child_weight=500.0)),
}


def latest_features(settings: HyperliftSettings, known: np.ndarray | pd.Series) -> pd.DataFrame:
    """Each user's newest activity snapshot joined with the profile: what serving reads online. By raw id (the
    lake's pseudonyms mapped back among the `known` users of the simulator, under the home's key), which the
    simulator's truth is indexed by."""
    data_dir = settings.data_dir
    activity = pd.read_parquet(data_dir / USER_ACTIVITY)
    activity = activity[activity["event_timestamp"] == activity["event_timestamp"].max()]
    profile = pd.read_parquet(data_dir / USER_PROFILE).drop(columns="event_timestamp")
    users = with_raw_ids(activity.merge(profile, on="user_id"), known, keys.key_file(settings))
    return users.sort_values("user_id").reset_index(drop=True)


def demo_inputs(settings: HyperliftSettings) -> tuple[pd.DataFrame, dict[str, float], pd.DataFrame, Shop]:
    """What `make demo` left to fit and score on: its training set (keyed by pseudonym, as the pipeline fits it),
    each action's unit cost, the consented users' latest features (by raw id), and the simulated shop (its ground
    truth)."""
    data = pd.read_parquet(settings.data_dir / TRAINING_SET)
    catalogue = pd.read_parquet(settings.data_dir / ACTION_CATALOGUE)
    costs = dict(zip(catalogue["action_id"], catalogue["unit_cost"].astype(float)))
    shop = build_shop(ShopConfig.from_env())
    users = latest_features(settings, shop.users["user_id"])
    return data, costs, users[users["consent_marketing"] == 1], shop


def main() -> None:
    """Fit every row, print a markdown table."""
    data, costs, users, shop = demo_inputs(HyperliftSettings())
    revenue = expected_revenue(shop, users["user_id"].to_numpy(), WINDOW_HOURS)
    print(f"training rows {len(data)}, consented users scored {len(users)}")
    print("| learner / setting | true net value / user | PEHE (mean over actions) | holdout Qini | "
          "holdout SNIPS incr. net value | calibration slope | fit s |")
    print("|---|---|---|---|---|---|---|")
    reference = None
    for name, (learner_name, params) in ROWS.items():
        started = time.perf_counter()
        trained = train_uplift(data, FEATURES, costs, LEARNERS[learner_name](**params))
        fit_s = time.perf_counter() - started
        model, m = trained.model, trained.metrics
        for figure in trained.figures.values():
            plt.close(figure)
        uplift = model.uplift(users[FEATURES].to_numpy(np.float32))
        true_uplift = revenue[:, [ACTION_IDS.index(a) for a in model.treatments]] - revenue[:, [0]]
        value = policy_value(shop, users["user_id"].to_numpy(), greedy_actions(model, uplift), WINDOW_HOURS)
        reference = value
        print(f"| {name} | {value['policy']['incremental_net_value_per_user']:.3f} | "
              f"{float(np.mean(pehe(uplift, true_uplift))):.3f} | {m['holdout_qini_mean']:.4f} | "
              f"{m['holdout_incremental_net_value_snips']:.3f} ± {m['holdout_policy_net_value_snips_se']:.3f} | "
              f"{m['holdout_calibration_slope']:.2f} | {fit_s:.1f} |", flush=True)
    assert reference is not None
    for name in ("random", "random_promotion", "oracle"):
        print(f"| reference: {name} | {reference[name]['incremental_net_value_per_user']:.3f} | | | | | |")


if __name__ == "__main__":
    main()
