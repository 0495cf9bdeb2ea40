"""Which model versions are live and which feature views they pin, on a real MLflow registry (SQLite in a temp dir)."""

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from feature_repo.versions import definition_view_pins
from training.learners import TLearner
from training.lifecycle import live_versions, promote, rollback, view_users, views_in_use
from training.pyfunc import UpliftModel
from training.registry import (
    FEATURE_SERVICE_TAG, FEATURE_SERVICE_VERSION_TAG, FEATURE_VIEWS_TAG, log_and_register, view_pins_of,
)

V1_PINS = definition_view_pins("uplift_v1")
V2_PINS = {"user_activity_v2_fv": "0123456789ab", "user_profile_fv": V1_PINS["user_profile_fv"]}


@pytest.fixture
def uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def register(uri: str, tmp_path, service: str, pins=None, alias: str = "challenger") -> str:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"f": rng.normal(size=200)})
    learner = TLearner(objective="reg:squarederror", n_estimators=3).fit(X, np.array(["no_action", "p"] * 100), rng.normal(size=200))
    return log_and_register(
        model=UpliftModel(learner, ["f"], {"p": 0.0}), tracking_uri=uri, experiment="live", artifact_dir=tmp_path / "a",
        model_name="m", feature_service=service, params={}, metrics={}, tags={}, input_example=X, alias=alias,
        feature_views=pins,
    ).version


def test_every_version_carries_its_exact_pins(uri, tmp_path):
    from_definitions = register(uri, tmp_path, "uplift_v1")
    given = register(uri, tmp_path, "uplift_v2", V2_PINS)
    undeclared = register(uri, tmp_path, "uplift_v9")
    client = MlflowClient(uri, registry_uri=uri)
    tags = client.get_model_version("m", from_definitions).tags
    assert tags[FEATURE_SERVICE_TAG] == "uplift_v1" and tags[FEATURE_SERVICE_VERSION_TAG] == "1"
    assert tags[FEATURE_VIEWS_TAG] == (
        f"user_activity_fv@{V1_PINS['user_activity_fv']},user_profile_fv@{V1_PINS['user_profile_fv']}")
    assert view_pins_of(uri, "m", from_definitions) == V1_PINS
    assert view_pins_of(uri, "m", given) == V2_PINS
    run = client.get_run(client.get_model_version("m", given).run_id)
    assert run.data.tags[FEATURE_VIEWS_TAG] == f"user_activity_v2_fv@0123456789ab,user_profile_fv@{V1_PINS['user_profile_fv']}"
    assert view_pins_of(uri, "m", undeclared) is None  # a service the repo does not declare: nothing to pin


def test_no_model_yet_uses_nothing(uri):
    assert live_versions(uri, "m") == {} and views_in_use(uri, "m") == set()


def test_views_in_use_follow_aliases_and_the_rollback_target(uri, tmp_path):
    v1 = register(uri, tmp_path, "uplift_v1")
    promote(uri, "m", v1)
    assert live_versions(uri, "m") == {"1": ("champion",)}
    assert views_in_use(uri, "m") == {"user_activity_fv", "user_profile_fv"}
    v2 = register(uri, tmp_path, "uplift_v2", V2_PINS)  # the challenger on the new version
    assert live_versions(uri, "m") == {"1": ("champion",), "2": ("challenger",)}
    assert view_users(uri, "m") == {
        "user_activity_fv": ("1",), "user_activity_v2_fv": ("2",), "user_profile_fv": ("1", "2")}
    promote(uri, "m", v2)  # v1 stays live: it is what a rollback returns to
    assert live_versions(uri, "m") == {"2": ("champion",), "1": ("rollback",)}
    assert views_in_use(uri, "m") == {"user_activity_fv", "user_activity_v2_fv", "user_profile_fv"}
    v3 = register(uri, tmp_path, "uplift_v2", V2_PINS)
    promote(uri, "m", v3)  # now nothing live pins user_activity_fv
    assert live_versions(uri, "m") == {"3": ("champion",), "2": ("rollback",)}
    assert view_users(uri, "m") == {"user_activity_v2_fv": ("2", "3"), "user_profile_fv": ("2", "3")}
    rollback(uri, "m")
    rollback(uri, "m")  # back to v1: its views are in use again
    assert live_versions(uri, "m") == {"1": ("champion",)}
    assert views_in_use(uri, "m") == {"user_activity_fv", "user_profile_fv"}


def test_a_version_without_pins_adds_no_views(uri, tmp_path):
    register(uri, tmp_path, "uplift_v9", alias="shadow")
    assert live_versions(uri, "m") == {"1": ("shadow",)} and views_in_use(uri, "m") == set()
