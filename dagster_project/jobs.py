"""Jobs: the training pipeline, and the drain of the decision and outcome streams."""

from __future__ import annotations

import dagster as dg

from dagster_project.assets.decisions import DECISION_DAYS

# The training pipeline's asset groups; the decision log (group "decision_log") runs on its own schedule.
PIPELINE_GROUPS = ("ingestion", "validation", "features", "online_store", "embeddings", "training", "models")

hyperlift_job = dg.define_asset_job(
    "hyperlift_job",
    selection=dg.AssetSelection.groups(*PIPELINE_GROUPS),
    description="Ingest → validate → features (and embeddings) → Feast/Redis → training set → challenger → gate → "
    "champion.",
)

# Between full retrains: fold in the users active since the last train or refresh, and put their vectors online.
embeddings_refresh_job = dg.define_asset_job(
    "embeddings_refresh_job",
    selection=dg.AssetSelection.assets("user_embeddings_refresh", "online_user_embeddings"),
    description="Fold-in of active users against the fixed item vectors, then materialize user_embedding_fv.",
)

decision_log_job = dg.define_asset_job(
    "decision_log_job",
    selection=dg.AssetSelection.assets("decision_trace", "outcome_events", "stream_quarantine"),
    description="Drain the decision, outcome and stream-quarantine streams from Redis into the lake (write, then "
    "acknowledge).",
)

decision_readout_job = dg.define_asset_job(
    "decision_readout_job",
    selection=dg.AssetSelection.assets("decision_outcomes", "experiment_readout"),
    partitions_def=DECISION_DAYS,
    description="Join a day's outcomes to its decisions, then read out the experiments of that day.",
)

# Each day's partition runs once the day is over; outcomes arriving within the attribution window after that are
# picked up by re-running the partition (metadata `window_closed` says whether the window had closed).
decision_readout_schedule = dg.build_schedule_from_partitioned_job(decision_readout_job, hour_of_day=1)
