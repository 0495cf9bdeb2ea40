"""Sensors: drain the decision and outcome streams whenever they hold entries the lake does not have yet (and add the
days of decisions that are over to the decision_days partitions); retrain from the log when enough new outcomes have
arrived since the last model; re-run a day's readout once its attribution windows have closed."""

import os
import time

import dagster as dg
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from dagster_project.assets.decisions import DECISION_TRACE, OUTCOME_EVENTS
from dagster_project.assets.retraining import LOG_CUTOFF_TAG
from dagster_project.jobs import decision_log_job, decision_readout_job, retrain_job
from dagster_project.partitions import DECISION_DAYS, complete_decision_days, unregistered_decision_days
from dagster_project.resources import DataLakeResource, MlflowResource, RedisResource
from serving.store.decision_log import OUTCOME_FORMAT, read_partitions, stream_backlog
from training.retrain import retrain_due

# How often the streams are checked; they are capped (MAXLEN), so a drain must come round before they fill.
DRAIN_INTERVAL_S = int(os.environ.get("HYPERLIFT_DECISION_DRAIN_INTERVAL_S", "60"))
# Outcomes drained since the last model's data was cut that make a retrain worth it.
RETRAIN_MIN_OUTCOMES = int(os.environ.get("HYPERLIFT_RETRAIN_MIN_OUTCOMES", "500"))
RETRAIN_INTERVAL_S = int(os.environ.get("HYPERLIFT_RETRAIN_INTERVAL_S", "600"))
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dg.sensor(
    job=decision_log_job, minimum_interval_seconds=DRAIN_INTERVAL_S, default_status=dg.DefaultSensorStatus.RUNNING
)
def decision_log_sensor(
    context: dg.SensorEvaluationContext, redis: RedisResource, lake: DataLakeResource
) -> dg.SensorResult:
    """Request a decision_log_job run when a stream has unacknowledged entries and no drain is in flight; add the
    days of drained decisions that are over (by the wall clock) to the decision_days partitions, so the last day
    before traffic stops becomes a partition without waiting for another drain."""
    added = unregistered_decision_days(context.instance, complete_decision_days(lake.path(DECISION_TRACE), time.time()))
    partitions = [DECISION_DAYS.build_add_request(added)] if added else []
    client = redis.client()
    streams = (redis.decision_stream, redis.outcome_stream, redis.quarantine_stream, redis.consent_stream)
    backlog = {s: stream_backlog(client, s, redis.drain_group) for s in streams}
    if not any(backlog.values()):
        return dg.SensorResult(skip_reason=f"nothing to drain: {backlog}", dynamic_partitions_requests=partitions)
    running = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=decision_log_job.name, statuses=IN_FLIGHT), limit=1
    )
    if running:
        return dg.SensorResult(skip_reason=f"run {running[0].run_id} is still draining; backlog {backlog}",
                               dynamic_partitions_requests=partitions)
    context.log.info("backlog %s: requesting a drain", backlog)
    request = dg.RunRequest(tags={f"backlog/{stream}": str(n) for stream, n in backlog.items()})
    return dg.SensorResult(run_requests=[request], dynamic_partitions_requests=partitions)


@dg.sensor(job=retrain_job, minimum_interval_seconds=RETRAIN_INTERVAL_S, default_status=dg.DefaultSensorStatus.RUNNING)
def retrain_sensor(
    context: dg.SensorEvaluationContext, lake: DataLakeResource, mlflow: MlflowResource
) -> dg.RunRequest | dg.SkipReason:
    """Request a retrain_job run when at least HYPERLIFT_RETRAIN_MIN_OUTCOMES outcomes (500) reached the lake after
    the newest model's data cut-off (its `log_cutoff_ts` run tag; a model without one counts every outcome)."""
    outcomes = read_partitions(lake.path(OUTCOME_EVENTS), record_format=OUTCOME_FORMAT)
    cutoff = latest_log_cutoff(mlflow.tracking_uri, mlflow.model_name)
    due, new = retrain_due(outcomes["ts"].to_numpy(dtype=float), cutoff, RETRAIN_MIN_OUTCOMES)
    if not due:
        return dg.SkipReason(f"{new} new outcomes since the last model's cut-off {cutoff}; waiting for "
                             f"{RETRAIN_MIN_OUTCOMES}")
    running = context.instance.get_runs(filters=dg.RunsFilter(job_name=retrain_job.name, statuses=IN_FLIGHT), limit=1)
    if running:
        return dg.SkipReason(f"run {running[0].run_id} is still retraining; {new} new outcomes")
    context.log.info("%d new outcomes since the cut-off %s: requesting a retrain", new, cutoff)
    return dg.RunRequest(run_key=f"outcomes-{len(outcomes)}", tags={"new_outcomes": str(new)})


def latest_log_cutoff(tracking_uri: str, model_name: str) -> float | None:
    """The newest `log_cutoff_ts` among the registered versions' runs (None: no model was trained on the log)."""
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        versions = client.search_model_versions(f"name = '{model_name}'")
    except MlflowException:
        return None
    cutoffs = [float(tag) for v in versions if (tag := client.get_run(v.run_id).data.tags.get(LOG_CUTOFF_TAG))]
    return max(cutoffs) if cutoffs else None


@dg.sensor(job=decision_readout_job, minimum_interval_seconds=3600, default_status=dg.DefaultSensorStatus.RUNNING)
def readout_final_sensor(context: dg.SensorEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
    """Re-run a day's outcome join and experiment readout once its attribution windows have closed: the partition
    was built `interim` (window_closed false), and now is past its `window_closes_at`. The re-run is marked final."""
    due = []
    for day in DECISION_DAYS.get_partition_keys(dynamic_partitions_store=context.instance):
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("decision_outcomes"), asset_partitions=[day]), limit=1
        ).records
        if not records:
            continue
        metadata = records[0].asset_materialization.metadata
        closes = metadata.get("window_closes_at")
        if metadata["window_closed"].value or closes is None or closes.value > time.time():
            continue
        due.append(dg.RunRequest(partition_key=day, run_key=f"final-{day}", tags={"readout": "final"}))
    return due or dg.SkipReason("no interim readout whose attribution windows have closed")
