"""The Dagster definitions load, hold the whole graph in one job, and pass `dagster definitions validate`."""

import subprocess
import sys
from pathlib import Path

import dagster as dg

from dagster_project.definitions import defs

REPO = Path(__file__).resolve().parents[2]
ASSETS = {
    "landing", "raw_events", "customers", "action_catalogue", "validated_events", "validation_report", "user_activity_features",
    "user_profile_features", "feast_registry", "online_features", "online_tiles", "training_set", "uplift_challenger", "uplift_champion",
    "item_user_embeddings", "user_embeddings_refresh", "online_user_embeddings",
}
DECISION_LOG_ASSETS = {
    "decision_trace", "outcome_events", "stream_quarantine", "consent_events", "decision_outcomes", "experiment_readout",
}
RETRAINING_ASSETS = {"logged_training_set", "log_challenger", "log_champion"}
GUARD_ASSETS = {"drift_guards"}  # dagster_project/assets/guards.py (docs/guards.md)
FAIRNESS_ASSETS = {"fair_exposure"}  # dagster_project/assets/fairness.py


def test_definitions_load_with_every_asset_and_resource():
    graph = defs.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == (
        ASSETS | DECISION_LOG_ASSETS | RETRAINING_ASSETS | GUARD_ASSETS | FAIRNESS_ASSETS)
    assert set(defs.resources) == {"lake", "redis", "feast", "mlflow", "shop", "landing", "event_time"}
    for name in ("feast", "mlflow", "redis"):
        assert isinstance(defs.resources[name], dg.ConfigurableResource)


def test_one_job_runs_the_whole_graph_in_dependency_order():
    job = defs.resolve_job_def("hyperlift_job")
    selected = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    assert selected == ASSETS
    assert job.executor_def is dg.in_process_executor  # a UI launch runs in one process, as the demo does
    graph = defs.resolve_asset_graph()
    upstream = {k.to_user_string() for k in graph.get(dg.AssetKey("training_set")).parent_keys}
    assert upstream == {"validated_events", "online_features"}


def test_embeddings_are_refreshed_by_their_own_job_after_a_full_train():
    job = defs.resolve_job_def("embeddings_refresh_job")
    selected = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    assert selected == {"user_embeddings_refresh", "online_user_embeddings"}
    graph = defs.resolve_asset_graph()
    parents = {
        name: {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}
        for name in ("item_user_embeddings", "user_embeddings_refresh", "online_user_embeddings")
    }
    assert parents == {
        "item_user_embeddings": {"validated_events"},
        "user_embeddings_refresh": {"item_user_embeddings", "validated_events"},
        "online_user_embeddings": {"feast_registry", "user_embeddings_refresh"},
    }
    assert graph.get(dg.AssetKey("item_user_embeddings")).group_name == "embeddings"


def test_contract_checks_are_blocking():
    graph = defs.resolve_asset_graph()
    checks = {key.name: graph.get_check_spec(key).blocking for key in graph.asset_check_keys}
    assert checks == {"validated_events_conform": True, "events_accounted_for": True, "challenger_beats_champion": True,
                      "challenger_beats_champion_on_log": True, "decision_log_reconciled": False,
                      "decisions_honour_consent": False}


def test_retraining_from_the_log_has_its_job_sensor_and_the_batch_jobs_their_schedules():
    job = defs.resolve_job_def("retrain_job")
    assert {key.to_user_string() for key in job.asset_layer.selected_asset_keys} == RETRAINING_ASSETS
    graph = defs.resolve_asset_graph()
    parents = {name: {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys} for name in RETRAINING_ASSETS}
    assert parents == {
        "logged_training_set": {"decision_trace", "outcome_events"},
        "log_challenger": {"logged_training_set", "action_catalogue"},
        "log_champion": {"log_challenger"},
    }
    assert {s.name: s.job_name for s in defs.sensors} == {"decision_log_sensor": "decision_log_job",
                                                          "retrain_sensor": "retrain_job",
                                                          "readout_final_sensor": "decision_readout_job",
                                                          "drift_guards_sensor": "drift_guards_job"}
    schedules = {s.job_name: s.cron_schedule for s in defs.schedules}
    assert schedules == {"decision_readout_job": schedules["decision_readout_job"], "hyperlift_job": "0 2 * * *",
                         "online_store_job": "30 */6 * * *", "embeddings_refresh_job": "15 * * * *",
                         "retention_job": "45 3 * * *", "fair_exposure_job": "20 * * * *"}


def test_the_drift_guards_run_from_their_sensor_after_the_drain():
    job = defs.resolve_job_def("drift_guards_job")
    assert {key.to_user_string() for key in job.asset_layer.selected_asset_keys} == GUARD_ASSETS
    parents = {k.to_user_string() for k in defs.resolve_asset_graph().get(dg.AssetKey("drift_guards")).parent_keys}
    assert parents == {"decision_trace", "outcome_events"}


def test_dagster_cli_validates_the_definitions():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-m", "dagster_project.definitions"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
