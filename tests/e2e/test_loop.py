"""End to end: the Dagster graph in-process on a tiny shop, then decisions through the service's test client."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from dagster_project.assets import models
from dagster_project.checks import promotion
from dagster_project.definitions import build_definitions
from dagster_project.partitions import shop_days
from dagster_project.resources import MlflowResource, build_resources
from dagster_project.resources.data_lake import QUARANTINE, RAW_EVENTS, TRAINING_SET, USER_ACTIVITY, VALIDATED_EVENTS
from serving.core.config import ServingSettings
from serving.main import create_app
from simulator import ShopConfig
from simulator.landing import write_landing
from infra.settings import HyperliftSettings
from training.lifecycle import alias_version

pytestmark = pytest.mark.e2e

TINY_SHOP = ShopConfig(n_users=1500, n_items=120, n_days=10, seed=3)


def lenient_gate(settings, margin: float = 0.0) -> MlflowResource:
    """The tiny shop's ~2,500 labelled exposures cannot show a calibrated uplift (the gate rightly refuses such a
    model: see test_an_uncalibrated_first_model_is_not_promoted); these tests exercise the wiring around it."""
    return MlflowResource(
        tracking_uri=settings.mlflow_uri, artifact_dir=str(settings.mlflow_artifacts_dir),
        promotion_qini_margin=margin, promotion_min_coverage=0.0, promotion_max_slope_z=1e9,
    )


@pytest.fixture(scope="module")
def e2e_redis_url(redis_databases):
    """This module's own flushed Redis database."""
    return redis_databases.fresh()


@pytest.fixture(scope="module")
def pipeline(e2e_redis_url, tmp_path_factory):
    """Run hyperlift_job once for the module on the shop's files (as a shop would land them: CSV, docs/landing.md);
    yields (settings, job result)."""
    home = tmp_path_factory.mktemp("e2e") / "hyperlift"
    write_landing(TINY_SHOP, home / "landing", fmt="csv.gz")
    settings = HyperliftSettings(home=home, reports_dir=home / "reports", landing_source="files")
    resources = build_resources(settings, e2e_redis_url, TINY_SHOP)
    resources["mlflow"] = lenient_gate(settings)
    defs = build_definitions(resources)
    result = defs.resolve_job_def("hyperlift_job").execute_in_process(
        run_config={"ops": {"uplift_challenger": {"config": {"n_estimators": 40}}}},
        instance=dg.DagsterInstance.ephemeral(),
        tags=shop_days(TINY_SHOP),
    )
    return settings, result


def test_job_succeeds_and_accounts_for_every_event(pipeline):
    settings, result = pipeline
    assert result.success
    raw = pd.read_parquet(settings.data_dir / RAW_EVENTS)
    accepted = pd.read_parquet(settings.data_dir / VALIDATED_EVENTS)
    quarantined = pd.read_parquet(settings.data_dir / QUARANTINE)
    assert len(raw) == len(accepted) + len(quarantined)
    assert len(quarantined) > 0 and quarantined["rule"].notna().all()
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"validated_events_conform": True, "events_accounted_for": True, "challenger_beats_champion": True}


def test_service_decides_with_the_registered_champion(pipeline, e2e_redis_url, monkeypatch):
    settings, _ = pipeline
    monkeypatch.setenv("HYPERLIFT_HOME", str(settings.home))
    # The shop's clock: its features are fresh as of its end, not as of today's wall clock.
    app = create_app(ServingSettings(redis_url=e2e_redis_url, seed=1, now=TINY_SHOP.end, mode="dev"))  # the shipped surfaces, regions, experiments
    with TestClient(app) as client:
        health = client.get("/healthz").json()
        assert health["status"] == "ok" and health["surfaces"] == ["checkout", "home"]
        assert health["models"] == {"hyperlift_uplift@champion": {"version": "1", "feature_service": "uplift_v1"}}
        body = client.post("/v1/decisions", json={"user_id": 5, "surface": "home"}).json()
        assert body["model"] == {"name": "hyperlift_uplift", "version": "1"}
        assert body["feature_service"] == "uplift_v1"
        assert body["fallback"] is None
        assert len(body["actions"]) == 1 and 0 < body["actions"][0]["propensity"] <= 1
        slate = client.post("/v1/decisions", json={"user_id": 5, "surface": "checkout"}).json()
        assert 1 <= len(slate["actions"]) <= 3 and slate["fallback"] is None
        # A never-seen user outside the shipped policy_holdout experiment's holdout arm, which serves the neutral
        # action before reading features (5 % of users, drawn from this home's random trace salt).
        for user in range(10_000_000, 10_000_050):
            cold = client.post("/v1/decisions", json={"user_id": user, "surface": "home"}).json()
            if cold["experiments"].get("policy_holdout") != "holdout":
                break
        assert cold["experiments"].get("policy_holdout") != "holdout", cold
        assert cold["fallback"] == "cold_start_unknown_user"
        assert cold["actions"] == [{"action_id": "no_action", "score": 0.0, "propensity": 1.0}]


def test_training_rows_carry_the_snapshot_in_force_at_exposure_time(pipeline):
    settings, _ = pipeline
    training = pd.read_parquet(settings.data_dir / TRAINING_SET)
    activity = pd.read_parquet(settings.data_dir / USER_ACTIVITY).set_index(["user_id", "event_timestamp"])
    sample = training[training["event_timestamp"] >= training["event_timestamp"].min() + pd.Timedelta(days=1)]
    sample = sample.sample(50, random_state=0)
    # Snapshots are stamped at midnight and cover events strictly before it: the one in force is the day's own.
    stamps = sample["event_timestamp"].dt.floor("D")
    expected = activity.loc[list(zip(sample["user_id"], stamps)), ["page_views_total", "activity_decayed"]]
    np.testing.assert_allclose(sample[["page_views_total", "activity_decayed"]].to_numpy(float), expected.to_numpy(float))
    assert (sample["label_revenue"] >= 0).all() and (training["propensity"] > 0).all()


def test_champion_run_records_metrics_and_feature_service(pipeline):
    settings, _ = pipeline
    client = MlflowClient(settings.mlflow_uri, registry_uri=settings.mlflow_uri)
    version = client.get_model_version_by_alias("hyperlift_uplift", "champion")
    assert version.tags["feature_service"] == "uplift_v1"
    run = client.get_run(version.run_id)
    assert run.data.tags["feature_service"] == "uplift_v1"
    assert {"holdout_qini_mean", "n_train_rows", "n_holdout_rows"} <= set(run.data.metrics)
    assert run.data.params["n_estimators"] == "40"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {
        "plots/holdout_qini_curves.png", "plots/holdout_uplift_curves.png", "plots/holdout_uplift_calibration.png"
    }
    # Readable in the MLflow UI: named after learner and window, its training set as the input, a description.
    learner = run.data.tags["learner"]
    window = run.data.tags["training_window"].split("/")
    assert run.info.run_name == f"{learner} {window[0][:10]}..{window[1][:10]}"
    (logged,) = run.inputs.dataset_inputs
    assert logged.dataset.digest == run.data.tags["dataset_hash"] and logged.dataset.name == "uplift_v1 training set"
    assert version.description.startswith(f"{learner} uplift model on uplift_v1: ")
    assert f"Holdout Qini {run.data.metrics['holdout_qini_mean']:.4f}" in version.description


def test_the_challengers_metadata_shows_its_plots_and_numbers(pipeline):
    _, result = pipeline
    metadata = result.asset_materializations_for_node("uplift_challenger")[0].metadata
    for name in ("holdout_qini_curves", "holdout_uplift_curves", "holdout_uplift_calibration"):
        assert metadata[name].value.startswith(f"![{name}](data:image/png;base64,iVBORw0KGgo")  # a PNG, inline
        assert metadata[f"{name}_file"].value.endswith(f"hyperlift_uplift_v{metadata['version'].value}_{name}.png")
    assert isinstance(metadata["metric/holdout_qini_mean"].value, float)


def train_and_gate(resources: dict) -> dg.ExecuteInProcessResult:
    """Materialize challenger → gate → champion only, on the module's training set."""
    return dg.materialize(
        [models.uplift_challenger, models.uplift_champion, promotion.challenger_beats_champion],
        resources=resources,
        run_config={"ops": {"uplift_challenger": {"config": {"n_estimators": 40}}}},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def test_a_challenger_that_does_not_beat_the_champion_is_not_promoted(pipeline, e2e_redis_url):
    settings, _ = pipeline
    uri = settings.mlflow_uri
    champion_before = alias_version(uri, "hyperlift_uplift", "champion")
    resources = build_resources(settings, e2e_redis_url, TINY_SHOP)
    resources["mlflow"] = lenient_gate(settings, margin=1.0)  # an unbeatable margin
    result = train_and_gate(resources)
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed is False
    assert "+ margin 1.0000" in evaluation.metadata["reasons"].value[0]
    # the same training set as the champion's: a retrain on unchanged data, refused whatever its Qini
    assert "a retrain on unchanged data" in evaluation.metadata["reasons"].value[1]
    assert alias_version(uri, "hyperlift_uplift", "champion") == champion_before
    assert alias_version(uri, "hyperlift_uplift", "challenger") == str(int(champion_before) + 1)
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"uplift_challenger"}  # the blocking check stopped uplift_champion


def test_an_uncalibrated_first_model_is_not_promoted(pipeline, e2e_redis_url, tmp_path):
    settings, _ = pipeline
    resources = build_resources(settings, e2e_redis_url, TINY_SHOP)
    fresh_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # an empty registry: no champion yet
    resources["mlflow"] = MlflowResource(tracking_uri=fresh_uri, artifact_dir=str(tmp_path / "artifacts"))
    result = train_and_gate(resources)
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed is False
    assert any(r.startswith("uplift calibration:") for r in evaluation.metadata["reasons"].value)
    assert alias_version(fresh_uri, "hyperlift_uplift", "champion") is None
