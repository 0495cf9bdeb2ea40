"""`python -m infra.migrate --to cluster`: the project's models, aliases, history, runs and Feast registry move from a
local home (SQLite, file registry) to PostgreSQL and equal their source there."""

from __future__ import annotations

import datetime as dt
import shutil

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from feature_repo.definitions import build_repo
from feature_repo.store import feature_store
from infra.migrate import MIGRATED_FROM_TAG, main, registry_differences
from training.learners import TLearner
from training.lifecycle import champion_history, promote
from training.pyfunc import UpliftModel
from training.registry import load_alias, log_and_register

MODEL = "hyperlift_uplift"
X = pd.DataFrame({"f": np.random.default_rng(0).normal(size=120)})


def register(settings, seed: int) -> str:
    """Train a tiny T-learner and register it the way the training asset does; its version."""
    rng = np.random.default_rng(seed)
    learner = TLearner(objective="reg:squarederror", n_estimators=3).fit(
        X, rng.choice(["no_action", "p"], len(X)), rng.normal(size=len(X)))
    return log_and_register(
        model=UpliftModel(learner, ["f"], {"p": 0.0}), tracking_uri=settings.mlflow_uri, experiment="promotions",
        artifact_dir=settings.mlflow_artifacts_dir, model_name=MODEL, feature_service="uplift_v1",
        params={"seed": seed}, metrics={"qini": 0.1 * seed}, tags={"trained_by": "test"}, input_example=X,
    ).version


@pytest.mark.postgres
def test_models_aliases_history_runs_and_registry_move_to_postgres(cluster_settings, online_redis_url, monkeypatch):
    local = cluster_settings.model_copy(update={"profile": "local", "mlflow_artifacts_root": None})
    source_uri = local.mlflow_uri
    assert source_uri.startswith("sqlite:///")
    # The local home as a season of work leaves it: v1 champion, v2 deleted, v3 champion after v1, a metric history.
    source = MlflowClient(source_uri, registry_uri=source_uri)
    v1 = register(local, 1)
    v2 = source.create_model_version(MODEL, "file:///nowhere/model").version  # deleted below: no model needed
    v3 = register(local, 3)
    source.delete_model_version(MODEL, v2)
    promote(source_uri, MODEL, v1)
    promote(source_uri, MODEL, v3)
    source.set_registered_model_alias(MODEL, "challenger", v1)
    v3_run = source.get_model_version(MODEL, v3).run_id
    source.log_metric(v3_run, "qini", 0.5, step=1)
    repo = build_repo(local.data_dir)
    store = feature_store(online_redis_url, local)
    store.apply(repo.objects())
    day = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    store.registry.apply_materialization(repo.user_activity_fv, store.project, day, day + dt.timedelta(days=1))

    for name, value in cluster_settings.environment(online_redis_url).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HYPERLIFT_POSTGRES_URL", str(cluster_settings.postgres_url))
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the target is the profile's; the source the home's SQLite store
    assert main(["--to", "cluster"]) == 0

    target_uri = cluster_settings.mlflow_uri
    assert target_uri.startswith("postgresql+psycopg2://")
    target = MlflowClient(target_uri, registry_uri=target_uri)
    assert registry_differences(source_uri, target_uri) == []
    model = target.get_registered_model(MODEL)
    # Versions behind aliases come back as int from PostgreSQL and str from SQLite: the project str()s them.
    aliases = {alias: str(number) for alias, number in model.aliases.items()}
    assert aliases == {"champion": v3, "challenger": v1}
    assert aliases == {alias: str(n) for alias, n in source.get_registered_model(MODEL).aliases.items()}
    assert champion_history(target_uri, MODEL) == ["1"]
    assert dict(model.tags) == dict(source.get_registered_model(MODEL).tags)
    with pytest.raises(MlflowException):  # the deleted version stays deleted, and v3 kept its number
        target.get_model_version(MODEL, v2)
    for number in (v1, v3):
        before, after = source.get_model_version(MODEL, number), target.get_model_version(MODEL, number)
        assert dict(after.tags) == dict(before.tags) and after.tags["feature_views"]
        run_before, run_after = source.get_run(before.run_id), target.get_run(after.run_id)
        assert run_after.data.tags[MIGRATED_FROM_TAG] == before.run_id != after.run_id
        assert (run_after.data.params, run_after.data.metrics) == (run_before.data.params, run_before.data.metrics)
        assert run_after.info.status == "FINISHED" and run_after.info.end_time == run_before.info.end_time
    history = [(m.step, m.value) for m in target.get_metric_history(target.get_model_version(MODEL, v3).run_id, "qini")]
    assert sorted(history) == [(0, pytest.approx(0.3)), (1, 0.5)]
    # The champion loads from the cluster's shared artifact root alone (the local artifacts are gone) and predicts
    # what it predicted before.
    original, _, _ = load_alias(source_uri, MODEL)
    shutil.rmtree(local.mlflow_artifacts_dir)
    shared = cluster_settings.mlflow_artifacts_dir
    for number in (v1, v3):
        old_model = source.get_model_version(MODEL, number).source
        new_model = target.get_model_version(MODEL, number).source
        assert new_model.startswith("models:/m-") and new_model != old_model
        assert target.get_model_version_download_uri(MODEL, number).startswith(shared.resolve().as_uri())
    champion, identity, service = load_alias(target_uri, MODEL)
    assert (identity.version, service) == (v3, "uplift_v1")
    pd.testing.assert_frame_equal(champion.predict(None, X.head(5)), original.predict(None, X.head(5)))
    # The Feast registry: every view, with its materialization intervals, and every service.
    moved = feature_store(online_redis_url, cluster_settings)
    assert type(moved.registry).__name__ == "SqlRegistry"
    views = {fv.name: fv.materialization_intervals for fv in store.list_feature_views()}
    assert {fv.name: fv.materialization_intervals for fv in moved.list_feature_views()} == views
    assert views["user_activity_fv"] == [(day, day + dt.timedelta(days=1))]
    services = sorted(fs.name for fs in store.list_feature_services())
    assert sorted(fs.name for fs in moved.list_feature_services()) == services
    assert moved.get_feature_service(repo.uplift_v1.name) == store.get_feature_service(repo.uplift_v1.name)


@pytest.mark.postgres
def test_a_second_migration_is_refused_and_changes_nothing(cluster_settings, monkeypatch, capsys):
    local = cluster_settings.model_copy(update={"profile": "local", "mlflow_artifacts_root": None})
    MlflowClient(local.mlflow_uri, registry_uri=local.mlflow_uri).create_registered_model(MODEL)
    for name in ("HYPERLIFT_HOME", "HYPERLIFT_POSTGRES_URL", "HYPERLIFT_MLFLOW_ARTIFACTS_ROOT"):
        field = name.removeprefix("HYPERLIFT_").lower()
        monkeypatch.setenv(name, str(getattr(cluster_settings, field)))
    monkeypatch.setenv("HYPERLIFT_PROFILE", "cluster")
    assert main(["--to", "cluster"]) == 0
    assert "no Feast registry at" in capsys.readouterr().err
    target_uri = cluster_settings.mlflow_uri
    MlflowClient(target_uri, registry_uri=target_uri).set_registered_model_tag(MODEL, "edited", "in the cluster")
    assert main(["--to", "cluster"]) == 1
    assert f"the target stores already have MLflow {MODEL}" in capsys.readouterr().err
    untouched = MlflowClient(target_uri, registry_uri=target_uri).get_registered_model(MODEL)
    assert untouched.tags == {"edited": "in the cluster"}
