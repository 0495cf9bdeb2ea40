"""Serving and schema versions: a model is served from the view versions it pins, and refused when they are gone."""

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from feature_repo.definitions import ACTIVITY_TABLE, build_repo
from feature_repo.materialize import fast_materialize
from feature_repo.store import feature_store
from feature_repo.versions import service_view_pins
from serving.decision.champion import FeatureServiceMissing, load_champion
from serving.core.runtime import build_runtime
from serving.core.schemas import DecisionRequest
from tests.feature_repo.versioned_repo import NEW_FEATURE, V2_FEATURES, activity_v2_rows, apply_v2, v2_objects
from tests.lake_ids import lake_id
from tests.serving.conftest import ACTIONS, register_model
from training.learners import TLearner
from training.lifecycle import promote, rollback
from training.pyfunc import UpliftModel
from training.registry import FEATURE_VIEWS_TAG, log_and_register

KEY = ("hyperlift_uplift", "champion")


@pytest.fixture(scope="module")
def v2_world(served_world):
    """The served world plus activity v2 (uplift_v2) applied and materialized next to v1."""
    settings, redis_url, _ = served_world
    store = feature_store(redis_url, settings)
    activity = pd.read_parquet(settings.data_dir / ACTIVITY_TABLE)
    view = apply_v2(store, build_repo(settings.data_dir), settings.data_dir, activity)
    end = (activity["event_timestamp"].max() + pd.Timedelta(seconds=1)).to_pydatetime()
    fast_materialize(store, [view.name], activity["event_timestamp"].min().to_pydatetime(), end)
    return settings, store, activity


def register_v2(settings, name: str, pins: dict[str, str], alias: str = "challenger", service: str = "uplift_v2") -> str:
    """A small model trained on uplift_v2's features, pinning `pins`."""
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.random((900, len(V2_FEATURES))), columns=V2_FEATURES)
    treatment = np.array(ACTIONS)[np.arange(900) % 3]
    learner = TLearner(objective="reg:squarederror", n_estimators=5).fit(X, treatment, rng.random(900))
    model = UpliftModel(learner, V2_FEATURES, {"pct10_sitewide": 0.0, "push_reminder": 0.02})
    return log_and_register(
        model=model, tracking_uri=settings.mlflow_uri, experiment="serving-test", artifact_dir=settings.mlflow_artifacts_dir,
        model_name=name, feature_service=service, params={}, metrics={}, tags={}, input_example=X, alias=alias,
        feature_views=pins,
    ).version


def refusal(settings, store, name: str, alias: str = "champion") -> str:
    with pytest.raises(FeatureServiceMissing) as refused:
        load_champion(settings.mlflow_uri, name, alias, store)
    return str(refused.value)


def test_the_old_versions_champion_serves_while_a_new_versions_model_is_registered(v2_world, serving_settings):
    settings, store, activity = v2_world
    version = register_v2(settings, "hyperlift_uplift", service_view_pins(store, "uplift_v2"))
    service = build_runtime(serving_settings).service
    champion = service.champions[KEY]
    assert (champion.ref.version, champion.features.feature_service_name) == ("1", "uplift_v1")
    assert service.decide(DecisionRequest(user_id=3, surface="home")).model.version == "1"
    challenger = load_champion(settings.mlflow_uri, "hyperlift_uplift", "challenger", store)
    assert (challenger.ref.version, challenger.features.feature_service_name) == (version, "uplift_v2")
    # The activity table and the online rows hold pseudonyms: raw user 3 (the request's) is stored as `three`.
    three = lake_id(settings, 3)
    newest = activity[activity["event_timestamp"] == activity["event_timestamp"].max()].set_index("user_id")
    old = champion.features.read(three, champion.model.feature_names).by_name
    new = challenger.features.read(three, challenger.model.feature_names).by_name
    assert old["mobile_view_share"] == pytest.approx(newest.loc[three, "mobile_view_share"], rel=1e-6)
    assert NEW_FEATURE not in old and "mobile_view_share" not in new
    expected = activity_v2_rows(newest.reset_index()).set_index("user_id").loc[three, NEW_FEATURE]
    assert new[NEW_FEATURE] == pytest.approx(expected, rel=1e-6)
    assert new["page_views_total"] == old["page_views_total"]


def test_a_view_changed_in_place_is_refused(v2_world):
    settings, store, _ = v2_world
    pins = service_view_pins(store, "uplift_v1")
    register_model(settings, "pinned_old_schema", "uplift_v1")
    MlflowClient(settings.mlflow_uri).set_model_version_tag(
        "pinned_old_schema", "1", FEATURE_VIEWS_TAG,
        f"user_activity_fv@0123456789ab,user_profile_fv@{pins['user_profile_fv']}")
    assert refusal(settings, store, "pinned_old_schema") == (
        "pinned_old_schema v1 was trained on feature view 'user_activity_fv' with schema 0123456789ab, but the Feast "
        f"registry's 'user_activity_fv' has schema {pins['user_activity_fv']}: a view's schema never changes in place; "
        "restore it and declare the new schema as 'user_activity_v2_fv' in a new feature service "
        "(docs/data-plane.md, 'Schema versions')"
    )


def test_a_service_whose_views_changed_is_refused(v2_world):
    settings, store, _ = v2_world
    register_v2(settings, "pinned_other_views", service_view_pins(store, "uplift_v2"), alias="champion", service="uplift_v1")
    assert refusal(settings, store, "pinned_other_views") == (
        "pinned_other_views v1 was trained on feature service 'uplift_v1' reading views ['user_activity_v2_fv', "
        "'user_profile_fv'], but the Feast registry's 'uplift_v1' reads ['user_activity_fv', 'user_profile_fv']; a "
        "feature service's views never change: restore it and declare the new views in a new feature service version "
        "(docs/data-plane.md, 'Schema versions')"
    )


def test_a_model_without_pins_is_refused(v2_world):
    settings, store, _ = v2_world
    register_model(settings, "pinned_nothing", "uplift_v1")
    MlflowClient(settings.mlflow_uri).delete_model_version_tag("pinned_nothing", "1", FEATURE_VIEWS_TAG)
    assert refusal(settings, store, "pinned_nothing") == (
        "pinned_nothing v1 records no feature view versions (model version tag 'feature_views'), so serving cannot "
        "tell whether feature service 'uplift_v1' still has the schemas it was trained on; re-register it with "
        "training.registry.log_and_register, which pins them"
    )


def test_a_pinned_view_gone_from_the_registry_is_refused(v2_world):
    settings, store, _ = v2_world
    pins = service_view_pins(store, "uplift_v2")
    register_v2(settings, "pinned_gone_view", pins, alias="champion")
    assert load_champion(settings.mlflow_uri, "pinned_gone_view", "champion", store) is not None
    store.registry.delete_feature_view("user_activity_v2_fv", store.project)  # uplift_v2 still names it
    try:
        assert refusal(settings, store, "pinned_gone_view") == (
            f"pinned_gone_view v1 was trained on feature view 'user_activity_v2_fv' (schema {pins['user_activity_v2_fv']}), "
            "which the Feast registry does not have; keep the view in feature_repo/definitions.py and run `feast "
            "apply` (the feast_registry asset) while a registered model uses it, or move the alias to a model "
            "trained on the current feature service"
        )
    finally:
        store.apply(list(v2_objects(build_repo(settings.data_dir), settings.data_dir)))
    assert load_champion(settings.mlflow_uri, "pinned_gone_view", "champion", store) is not None


def test_the_watcher_keeps_the_champion_when_the_new_ones_views_are_unavailable(v2_world, serving_settings):
    settings, store, _ = v2_world
    runtime = build_runtime(serving_settings)
    service = runtime.service
    before = service.champions[KEY].ref.version
    version = register_model(settings, "hyperlift_uplift", "uplift_v1", alias="challenger", seed=4)
    MlflowClient(settings.mlflow_uri).set_model_version_tag("hyperlift_uplift", version, FEATURE_VIEWS_TAG, "user_activity_fv@0123456789ab")
    promote(settings.mlflow_uri, "hyperlift_uplift", version)
    try:
        assert runtime.watcher.refresh() == 0
        assert service.champions[KEY].ref.version == before
        assert service.metrics.total("hyperlift_model_refresh_failures_total") == 1
    finally:
        rollback(settings.mlflow_uri, "hyperlift_uplift")
