"""The online_features asset's dual-write choice on real Feast and a real MLflow store."""

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from dagster_project.assets.online_store import uplift_views_to_write
from dagster_project.resources import MlflowResource
from feature_repo.definitions import build_repo
from feature_repo.versions import service_view_pins
from simulator import ShopConfig
from tests.feature_repo.factories import materialize_shop
from tests.feature_repo.versioned_repo import apply_v2
from training.learners import TLearner
from training.lifecycle import promote
from training.pyfunc import UpliftModel
from training.registry import log_and_register

SHOP = ShopConfig(n_users=60, n_items=20, n_days=3, seed=2)


def register(mlflow: MlflowResource, service: str, pins=None) -> str:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"f": rng.normal(size=200)})
    learner = TLearner(objective="reg:squarederror", n_estimators=3).fit(X, np.array(["no_action", "p"] * 100), rng.normal(size=200))
    return log_and_register(
        model=UpliftModel(learner, ["f"], {"p": 0.0}), tracking_uri=mlflow.tracking_uri, experiment=mlflow.experiment,
        artifact_dir=Path(mlflow.artifact_dir), model_name=mlflow.model_name, feature_service=service, params={}, metrics={},
        tags={}, input_example=X, feature_views=pins,
    ).version


def test_views_written_follow_the_live_models(settings, online_redis_url):
    store, activity, _, _ = materialize_shop(settings, online_redis_url, SHOP)
    apply_v2(store, build_repo(settings.data_dir), settings.data_dir, activity)
    mlflow = MlflowResource(tracking_uri=settings.mlflow_uri, artifact_dir=str(settings.mlflow_artifacts_dir))
    context = dg.build_asset_context()
    plan = uplift_views_to_write(context, store, mlflow)  # no model yet: uplift_v1's views only
    assert (plan.write, plan.retired) == (("user_activity_fv", "user_profile_fv"), ("user_activity_v2_fv",))
    promote(mlflow.tracking_uri, mlflow.model_name, register(mlflow, "uplift_v1"))
    challenger = register(mlflow, "uplift_v2", service_view_pins(store, "uplift_v2"))
    plan = uplift_views_to_write(context, store, mlflow)
    assert (plan.write, plan.retired) == (("user_activity_fv", "user_profile_fv", "user_activity_v2_fv"), ())
    assert plan.users == {"user_activity_fv": ("1",), "user_activity_v2_fv": (challenger,), "user_profile_fv": ("1", challenger)}
