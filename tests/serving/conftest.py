"""A served world: features of a small shop materialized in a real Redis, and a champion in a real MLflow store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feature_repo.contracts import validate_events
from feature_repo.definitions import ACTIVITY_TABLE, PROFILE_TABLE, build_repo
from feature_repo.store import feature_store
from feature_repo.transforms import ACTIVITY_FEATURES, PROFILE_FEATURES, SnapshotWindow, user_activity_snapshots, user_profile_rows
from infra.settings import HyperliftSettings
from serving.config import ServingSettings
from simulator import ShopConfig, build_shop, simulate_events
from training.pyfunc import UpliftModel
from training.registry import log_and_register
from training.tlearner import TLearner

SHOP = ShopConfig(n_users=200, n_items=40, n_days=4, seed=5)
FEATURES = [*ACTIVITY_FEATURES, *PROFILE_FEATURES]
ACTIONS = ["no_action", "pct10_sitewide", "push_reminder"]


def register_model(settings: HyperliftSettings, name: str, feature_service: str) -> None:
    """Register a small champion whose uplift for push_reminder grows with mobile_view_share."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.random((900, len(FEATURES))), columns=FEATURES)
    treatment = np.array(ACTIONS)[np.arange(900) % 3]
    y = X["mobile_view_share"].to_numpy() * 3 * (treatment == "push_reminder") + rng.random(900)
    learner = TLearner(objective="reg:squarederror", n_estimators=20).fit(X, treatment, y)
    model = UpliftModel(learner, FEATURES, {"pct10_sitewide": 0.0, "push_reminder": 0.02})
    log_and_register(
        model=model, tracking_uri=settings.mlflow_uri, experiment="serving-test", artifact_dir=settings.mlflow_artifacts_dir,
        model_name=name, feature_service=feature_service, params={}, metrics={}, tags={}, input_example=X,
    )


@pytest.fixture(scope="module")
def served_world(tmp_path_factory, redis_databases):
    """(platform settings, redis url, shop users) with features online and a champion registered."""
    home = tmp_path_factory.mktemp("serving") / "hyperlift"
    settings = HyperliftSettings(home=home, reports_dir=home / "reports")
    redis_url = redis_databases.fresh()
    shop = build_shop(SHOP)
    accepted = validate_events(simulate_events(shop), pd.Timestamp(SHOP.end)).accepted
    window = SnapshotWindow(pd.Timestamp(SHOP.start), SHOP.n_days)
    activity = user_activity_snapshots(accepted, shop.users["user_id"].to_numpy(), window)
    profile = user_profile_rows(shop.users)
    for table, frame in ((ACTIVITY_TABLE, activity), (PROFILE_TABLE, profile)):
        (settings.data_dir / table).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(settings.data_dir / table, index=False)
    store = feature_store(redis_url, settings)
    store.apply(build_repo(settings.data_dir).objects())
    store.materialize(profile["event_timestamp"].min().to_pydatetime(),
                      (window.stamps()[-1] + pd.Timedelta(seconds=1)).to_pydatetime())
    register_model(settings, "hyperlift_uplift", "uplift_v1")
    return settings, redis_url, shop.users


@pytest.fixture
def serving_settings(served_world, monkeypatch) -> ServingSettings:
    """Serving settings pointing at the served world (the platform settings come from HYPERLIFT_HOME)."""
    settings, redis_url, _ = served_world
    monkeypatch.setenv("HYPERLIFT_HOME", str(settings.home))
    return ServingSettings(redis_url=redis_url, seed=3, epsilon=0.2)
