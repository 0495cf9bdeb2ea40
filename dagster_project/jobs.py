"""Jobs and schedules: the training pipeline, materialization, embeddings, the decision log, retraining from it."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from dagster_project.partitions import DECISION_DAYS

# The training pipeline's asset groups; the decision log (group "decision_log") runs on its own schedule.
PIPELINE_GROUPS = ("ingestion", "validation", "features", "online_store", "embeddings", "training", "models")

# One process for the whole run, also when launched from the UI: the default executor starts a process per step,
# and each re-imports Dagster, Feast, MLflow and XGBoost (a UI launch took 4 min 19 s against ~75 s in process).
hyperlift_job = dg.define_asset_job(
    "hyperlift_job",
    selection=dg.AssetSelection.groups(*PIPELINE_GROUPS),
    description="Ingest → validate → features (and embeddings) → Feast/Redis → training set → challenger → gate → "
    "champion.",
    executor_def=dg.in_process_executor,
)

# Between full retrains: fold in the users active since the last train or refresh, and put their vectors online.
embeddings_refresh_job = dg.define_asset_job(
    "embeddings_refresh_job",
    selection=dg.AssetSelection.assets("user_embeddings_refresh", "online_user_embeddings"),
    description="Fold-in of active users against the fixed item vectors, then materialize user_embedding_fv.",
)

decision_log_job = dg.define_asset_job(
    "decision_log_job",
    selection=dg.AssetSelection.assets("decision_trace", "outcome_events", "stream_quarantine", "consent_events"),
    description="Drain the decision, outcome, stream-quarantine and consent streams from Redis into the lake (write, "
    "then acknowledge).",
)

decision_readout_job = dg.define_asset_job(
    "decision_readout_job",
    selection=dg.AssetSelection.assets("decision_outcomes", "experiment_readout"),
    partitions_def=DECISION_DAYS,
    description="Join a day's outcomes to its decisions, then read out the experiments of that day.",
)


# Each day's partition runs once the day is over; outcomes arriving within the attribution window after that are
# picked up by re-running the partition (metadata `window_closed` says whether the window had closed; the
# readout_final_sensor re-runs it then). A day without decisions is no partition and has nothing to read out.
@dg.schedule(job=decision_readout_job, cron_schedule="0 1 * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED)
def decision_readout_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    """Daily at 01:00 UTC: outcomes joined and experiments read out for the day before, if it holds decisions."""
    tick = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    day = (tick.astimezone(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
    if not context.instance.has_dynamic_partition(DECISION_DAYS.name, day):
        return dg.SkipReason(f"{day} is not a decision_days partition: no decision of that day was drained")
    return dg.RunRequest(partition_key=day, run_key=f"daily-{day}")

# Retraining from the decision log (dagster_project/assets/retraining.py): started by `retrain_sensor` when enough new
# outcomes arrived, or by `make loop` each simulated round; the blocking gate on the log decides the promotion.
retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=dg.AssetSelection.assets("logged_training_set", "log_challenger", "log_champion"),
    description="Decision log ⨝ outcomes (delay-corrected) → challenger → off-policy gate on the held-out window → "
    "champion.",
)

online_store_job = dg.define_asset_job(
    "online_store_job",
    selection=dg.AssetSelection.groups("online_store"),
    description="Materialize the feature views from the offline store into Redis (what the batch pipeline last wrote).",
)

# The batch pipeline's own cadence. They ship stopped: on a laptop `make dagster` should not start a full retrain by
# itself; turn them on in the UI (Automation) or with `dagster schedule start`.
hyperlift_schedule = dg.ScheduleDefinition(
    job=hyperlift_job, cron_schedule="0 2 * * *", default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Nightly: the whole batch pipeline on the day's arrivals.",
)
online_store_schedule = dg.ScheduleDefinition(
    job=online_store_job, cron_schedule="30 */6 * * *", default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Every 6 hours: re-materialize the online store (repairs rows a streaming fault left stale).",
)
embeddings_refresh_schedule = dg.ScheduleDefinition(
    job=embeddings_refresh_job, cron_schedule="15 * * * *", default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Hourly: fold in the users active since the last train or refresh.",
)
