"""The drift guards' job and sensor: `drift_guards` runs whenever the decision lake has grown by the guards' `step`
decisions (serving/conf/guards.yaml) since the last run, so that each run is about one look of the sequential test
whose false-alarm rate the configuration sets (docs/guards.md)."""

import os

import dagster as dg
import pyarrow.parquet as pq

from dagster_project.assets.decisions import DECISION_TRACE
from dagster_project.resources import DataLakeResource
from training.guards.config import load_guard_config

GUARD_INTERVAL_S = int(os.environ.get("HYPERLIFT_GUARD_INTERVAL_S", "60"))

drift_guards_job = dg.define_asset_job(
    "drift_guards_job", selection=dg.AssetSelection.assets("drift_guards"),
    description="PSI/JS and calibration per surface; alarms switch the surface cautious and may roll back.",
    executor_def=dg.in_process_executor,
)


def lake_decisions(lake: DataLakeResource) -> int:
    """Decision records in the lake (from the parquet footers: no data is read)."""
    return sum(pq.ParquetFile(p).metadata.num_rows for p in lake.path(DECISION_TRACE).rglob("*.parquet"))


@dg.sensor(job=drift_guards_job, minimum_interval_seconds=GUARD_INTERVAL_S,
           default_status=dg.DefaultSensorStatus.RUNNING)
def drift_guards_sensor(context: dg.SensorEvaluationContext, lake: DataLakeResource) -> dg.RunRequest | dg.SkipReason:
    """Request a drift_guards_job run once `step` new decisions reached the lake since the last request."""
    step = load_guard_config().step
    total = lake_decisions(lake)
    last = int(context.cursor or 0)
    if total - last < step:
        return dg.SkipReason(f"{total - last} new decisions since the last look; a look every {step}")
    context.update_cursor(str(total))
    return dg.RunRequest(run_key=f"decisions-{total}", tags={"decisions": str(total)})


fair_exposure_job = dg.define_asset_job(
    "fair_exposure_job", selection=dg.AssetSelection.assets("fair_exposure"),
    description="Promotion exposure and expected value by region, device and segment; parity caps when enforced.",
    executor_def=dg.in_process_executor,
)
fair_exposure_schedule = dg.ScheduleDefinition(
    job=fair_exposure_job, cron_schedule="20 * * * *", default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Hourly: judge the last decisions' exposure against serving/conf/fairness.yaml (ships stopped, as "
                "the batch schedules do: turn it on where decisions are being logged).",
)
