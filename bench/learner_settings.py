"""T-learner settings → true policy value on the simulated shop, next to the holdout Qini.

Run after `make demo` (it reads the demo's training set and features from HYPERLIFT_HOME):
    .venv/bin/python -m bench.learner_settings
Each setting is fitted exactly as the uplift_model asset fits (training.train.train_uplift); the greedy policy
(argmax of uplift − unit cost, no_action = 0) is then applied to every consented user's latest features and scored
with the simulator's ground truth (expected incremental net value per user, 72 h window).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from dagster_project.resources.data_lake import ACTION_CATALOGUE, TRAINING_SET, USER_ACTIVITY, USER_PROFILE
from feature_repo.transforms import ACTIVITY_FEATURES, PROFILE_FEATURES
from infra.settings import HyperliftSettings
from simulator import ShopConfig, build_shop, policy_value
from training.learners import TLearner
from training.train import train_uplift

FEATURES = [*ACTIVITY_FEATURES, *PROFILE_FEATURES]
SETTINGS: dict[str, dict] = {
    "depth 4, 300 trees, mcw 5 (first default)": dict(max_depth=4, n_estimators=300, min_child_weight=5.0),
    "depth 6, 500 trees, mcw 5": dict(max_depth=6, n_estimators=500, min_child_weight=5.0),
    "depth 3, 200 trees, mcw 50": dict(max_depth=3, n_estimators=200, min_child_weight=50.0),
    "depth 2, 200 trees, mcw 50 (default)": {},
    "depth 1, 300 trees, mcw 50": dict(max_depth=1, n_estimators=300, min_child_weight=50.0),
    "depth 2, 200 trees, squared error": dict(objective="reg:squarederror"),
}


def latest_features(data_dir) -> pd.DataFrame:
    """Each user's newest activity snapshot joined with the profile: what serving reads online."""
    activity = pd.read_parquet(data_dir / USER_ACTIVITY)
    activity = activity[activity["event_timestamp"] == activity["event_timestamp"].max()]
    profile = pd.read_parquet(data_dir / USER_PROFILE).drop(columns="event_timestamp")
    return activity.merge(profile, on="user_id").sort_values("user_id").reset_index(drop=True)


def main() -> None:
    """Fit every setting, print a markdown table."""
    settings = HyperliftSettings()
    data = pd.read_parquet(settings.data_dir / TRAINING_SET)
    catalogue = pd.read_parquet(settings.data_dir / ACTION_CATALOGUE)
    costs = dict(zip(catalogue["action_id"], catalogue["unit_cost"].astype(float)))
    users = latest_features(settings.data_dir)
    users = users[users["consent_marketing"] == 1]
    shop = build_shop(ShopConfig.from_env())
    print(f"training rows {len(data)}, consented users scored {len(users)}")
    print("| setting | true net value / user | holdout Qini (mean) | fit s |")
    print("|---|---|---|---|")
    reference = None
    for name, params in SETTINGS.items():
        started = time.perf_counter()
        trained = train_uplift(data, FEATURES, costs, TLearner(**params))
        fit_s = time.perf_counter() - started
        model = trained.model
        net = model.uplift(users[FEATURES].to_numpy(np.float32)) - np.array([costs[a] for a in model.treatments])
        chosen = np.array([model.control, *model.treatments], dtype=object)[
            np.column_stack([np.zeros(len(net)), net]).argmax(axis=1)
        ]
        value = policy_value(shop, users["user_id"].to_numpy(), chosen, window_hours=72.0)
        reference = value
        print(f"| {name} | {value['policy']['incremental_net_value_per_user']:.3f} | "
              f"{trained.metrics['holdout_qini_mean']:.4f} | {fit_s:.1f} |", flush=True)
    assert reference is not None
    for name in ("random", "random_promotion", "oracle"):
        print(f"| reference: {name} | {reference[name]['incremental_net_value_per_user']:.3f} | | |")


if __name__ == "__main__":
    main()
