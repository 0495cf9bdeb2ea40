"""Dagster entry point: wiring only (`dagster dev -m dagster_project.definitions`)."""

from __future__ import annotations

import dagster as dg

from dagster_project.assets import (
    decisions, embeddings, experiments, fairness, features, guards, ingestion, models, online_store, retraining,
    stream_state, training, validation,
)
from dagster_project.checks import decision_log as decision_log_checks, promotion, validation as validation_checks
from dagster_project.jobs import (
    decision_log_job, decision_readout_job, decision_readout_schedule, embeddings_refresh_job,
    embeddings_refresh_schedule, hyperlift_job, hyperlift_schedule, online_store_job, online_store_schedule,
    retrain_job,
)
from dagster_project.privacy import erasure_job, retention_job, retention_schedule
from dagster_project.resources import resources_from_env
from dagster_project.guard_sensors import (
    drift_guards_job, drift_guards_sensor, fair_exposure_job, fair_exposure_schedule,
)
from dagster_project.sensors import decision_log_sensor, readout_final_sensor, retrain_sensor


def build_definitions(resources: dict[str, object]) -> dg.Definitions:
    """All assets, checks, jobs and sensors bound to the given resources."""
    return dg.Definitions(
        assets=dg.load_assets_from_modules(
            [ingestion, validation, features, online_store, stream_state, embeddings, training, models, decisions, experiments,
             retraining, guards, fairness]
        ),
        asset_checks=dg.load_asset_checks_from_modules([validation_checks, promotion, decision_log_checks]),
        jobs=[hyperlift_job, online_store_job, embeddings_refresh_job, decision_log_job, decision_readout_job, retrain_job,
              drift_guards_job, erasure_job, retention_job, fair_exposure_job],
        schedules=[decision_readout_schedule, hyperlift_schedule, online_store_schedule, embeddings_refresh_schedule,
                   retention_schedule, fair_exposure_schedule],
        sensors=[decision_log_sensor, retrain_sensor, readout_final_sensor, drift_guards_sensor],
        resources=resources,
    )


defs = build_definitions(resources_from_env())
