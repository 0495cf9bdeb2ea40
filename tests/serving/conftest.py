"""A served world: features of a small shop materialized in a real Redis, and a champion in a real MLflow store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from feature_repo.transforms import ACTIVITY_FEATURES, PROFILE_FEATURES
from infra.settings import HyperliftSettings
from serving.core.config import ServingSettings
from simulator import ShopConfig
from tests.feature_repo.factories import materialize_shop
from training.pyfunc import UpliftModel
from training.registry import CHAMPION_ALIAS, log_and_register
from training.learners import TLearner

SHOP = ShopConfig(n_users=200, n_items=40, n_days=4, seed=5)
FEATURES = [*ACTIVITY_FEATURES, *PROFILE_FEATURES]
ACTIONS = ["no_action", "pct10_sitewide", "push_reminder"]


def register_model(
    settings: HyperliftSettings, name: str, feature_service: str, alias: str = CHAMPION_ALIAS, seed: int = 0
) -> str:
    """Register a small model whose uplift for push_reminder grows with mobile_view_share; returns its version."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.random((900, len(FEATURES))), columns=FEATURES)
    treatment = np.array(ACTIONS)[np.arange(900) % 3]
    y = X["mobile_view_share"].to_numpy() * 3 * (treatment == "push_reminder") + rng.random(900)
    learner = TLearner(objective="reg:squarederror", n_estimators=20).fit(X, treatment, y)
    model = UpliftModel(learner, FEATURES, {"pct10_sitewide": 0.0, "push_reminder": 0.02})
    return log_and_register(
        model=model, tracking_uri=settings.mlflow_uri, experiment="serving-test", artifact_dir=settings.mlflow_artifacts_dir,
        model_name=name, feature_service=feature_service, params={}, metrics={}, tags={}, input_example=X, alias=alias,
    ).version


@pytest.fixture(autouse=True)
def shop_clock(monkeypatch) -> None:
    """Serve at the end of the simulated shop: judged by the wall clock (later) every feature row would be stale."""
    monkeypatch.setenv("HYPERLIFT_SERVING_NOW", SHOP.end.isoformat())


@pytest.fixture(scope="module")
def served_world(tmp_path_factory, redis_databases):
    """(platform settings, redis url, shop users) with features online and a champion registered."""
    home = tmp_path_factory.mktemp("serving") / "hyperlift"
    settings = HyperliftSettings(home=home, reports_dir=home / "reports")
    redis_url = redis_databases.fresh()
    _, _, _, shop = materialize_shop(settings, redis_url, SHOP)
    register_model(settings, "hyperlift_uplift", "uplift_v1")
    return settings, redis_url, shop.users


# Surfaces over the test model's three actions: single-slot epsilon-greedy, a diversified softmax slate, and a
# greedy push surface with a cap and a budget. Deadlines are generous (16 test threads on 2 cores are slow) except
# in the tests about deadlines, which set their own.
RELAXED = {"features_ms": 2000, "scoring_ms": 1000, "total_ms": 5000}
SURFACES = {
    "home": {
        "name": "home", "feature_service": "uplift_v1", "exploration": {"method": "epsilon_greedy", "epsilon": 0.2},
        "deadlines": RELAXED,
    },
    "cart": {
        "name": "cart", "feature_service": "uplift_v1", "slate_size": 2,
        "exploration": {"method": "softmax", "temperature": 0.1, "floor": 0.05},
        "diversity": {"penalty": 1.0, "groups": {"discount": ["pct10_sitewide"], "message": ["push_reminder"]}},
        "deadlines": RELAXED,
    },
    "push": {
        "name": "push", "feature_service": "uplift_v1", "exploration": {"method": "greedy"},
        "candidates": {"source": "model_actions", "actions": ["no_action", "push_reminder"]},
        "caps": [{"name": "pushes_per_day", "window_s": 86400, "limit": 2, "actions": ["push_reminder"]}],
        "budgets": [{"campaign": "push_campaign", "daily_budget": 1.0, "costs": {"push_reminder": 0.02}, "pacing": "none"}],
        "deadlines": RELAXED,
    },
}
REGIONS = {
    "standard": {"name": "standard", "default": True, "regions": ["south", "west"]},
    "strict": {"name": "strict", "regions": ["north", "east"], "blocked_actions": ["push_reminder"]},
}


def write_policy_dir(root: Path, surfaces: dict = SURFACES, regions: dict = REGIONS, experiments: dict | None = None) -> Path:
    """A config folder (surfaces/, regions/, experiments.yaml) from plain dicts; returns the folder."""
    for kind, items in (("surfaces", surfaces), ("regions", regions)):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for name, body in items.items():
            (root / kind / f"{name}.yaml").write_text(yaml.safe_dump(body))
    (root / "experiments.yaml").write_text(yaml.safe_dump(experiments or {"layers": []}))
    return root


@pytest.fixture
def serving_settings(served_world, monkeypatch, tmp_path) -> ServingSettings:
    """Serving settings pointing at the served world (the platform settings come from HYPERLIFT_HOME), in dev mode:
    the routes are open (tests/serving/api/test_auth.py is about keys)."""
    settings, redis_url, _ = served_world
    monkeypatch.setenv("HYPERLIFT_HOME", str(settings.home))
    policy = write_policy_dir(tmp_path / "policy")
    return ServingSettings(
        redis_url=redis_url, seed=3, config_dir=policy, experiments_file=policy / "experiments.yaml",
        model_refresh_s=0, log_decisions=False, mode="dev",
    )
