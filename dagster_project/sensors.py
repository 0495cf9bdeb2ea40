"""Sensors: drain the decision and outcome streams whenever they hold entries the lake does not have yet."""

import os

import dagster as dg

from dagster_project.jobs import decision_log_job
from dagster_project.resources import RedisResource
from serving.store.decision_log import stream_backlog

# How often the streams are checked; they are capped (MAXLEN), so a drain must come round before they fill.
DRAIN_INTERVAL_S = int(os.environ.get("HYPERLIFT_DECISION_DRAIN_INTERVAL_S", "60"))
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dg.sensor(
    job=decision_log_job, minimum_interval_seconds=DRAIN_INTERVAL_S, default_status=dg.DefaultSensorStatus.RUNNING
)
def decision_log_sensor(context: dg.SensorEvaluationContext, redis: RedisResource) -> dg.RunRequest | dg.SkipReason:
    """Request a decision_log_job run when a stream has unacknowledged entries and no drain is in flight."""
    client = redis.client()
    streams = (redis.decision_stream, redis.outcome_stream, redis.quarantine_stream)
    backlog = {s: stream_backlog(client, s, redis.drain_group) for s in streams}
    if not any(backlog.values()):
        return dg.SkipReason(f"nothing to drain: {backlog}")
    running = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=decision_log_job.name, statuses=IN_FLIGHT), limit=1
    )
    if running:
        return dg.SkipReason(f"run {running[0].run_id} is still draining; backlog {backlog}")
    context.log.info("backlog %s: requesting a drain", backlog)
    return dg.RunRequest(tags={f"backlog/{stream}": str(n) for stream, n in backlog.items()})
