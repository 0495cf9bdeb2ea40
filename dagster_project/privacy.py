"""Privacy jobs: `erasure_job` erases one user from every store (infra/erasure), `retention_job` deletes what each
store holds beyond its retention period (docs/privacy.md), on `retention_schedule` (ships stopped).

The run config of an erasure_job run holds the user's raw id, and Dagster keeps run configs in its run storage:
pass it as `{"user_id": {"env": "ERASE_USER_ID"}}` (the run records the variable's name only), delete the run once it
succeeded (`dagster run delete <run id>`), or erase through `make erase` or `POST /v1/admin/erasure`, which keep no
raw id anywhere.
"""

import datetime as dt

import dagster as dg
from pydantic import Field

from dagster_project.assets.decisions import DECISION_TRACE
from dagster_project.partitions import DECISION_DAYS, decision_days_without_data
from dagster_project.resources import EventTimeResource, FeastResource, RedisResource
from feature_repo.contracts import MAX_ID
from infra.erasure.procedure import Target, erase
from infra.erasure.retention import enforce
from infra.erasure.settings import RetentionSettings


class ErasureConfig(dg.Config):
    """Whom to erase, and why (the reason goes into the receipt and the audit trail)."""

    user_id: int = Field(ge=0, le=MAX_ID)
    reason: str = Field(default="data subject request", min_length=1, max_length=500)


class RetentionConfig(dg.Config):
    """The clock the lake's partitions are judged by, and whether to delete or only list."""

    now: str | None = None  # ISO-8601 instant with offset (simulated time); unset: the wall clock
    dry_run: bool = False


@dg.op
def erase_user(context: dg.OpExecutionContext, config: ErasureConfig, feast: FeastResource,
               redis: RedisResource) -> str:
    """Remove or anonymise one user in the lake, Redis (and its files), the write-ahead files, MLflow and logs."""
    receipt = erase(config.user_id, Target.from_env(feast.settings(), redis.url), actor="dagster", reason=config.reason)
    context.log.info("erased user_key %s: %s (receipt %s)", receipt.user_key, receipt.summary(), receipt.path)
    context.add_output_metadata({"user_key": receipt.user_key, "receipt": dg.MetadataValue.path(receipt.path),
                                 "touched": dg.MetadataValue.json(receipt.summary())})
    return receipt.path


@dg.op
def enforce_retention(context: dg.OpExecutionContext, config: RetentionConfig, feast: FeastResource,
                      redis: RedisResource, event_time: EventTimeResource) -> dict:
    """Delete lake partitions, stream entries, write-ahead segments, logs and audit files older than their period
    (activity tile partitions are folded into the lake fold first, at the pipeline's allowed lateness)."""
    now = None
    if config.now is not None:
        instant = dt.datetime.fromisoformat(config.now)
        if instant.tzinfo is None:
            raise ValueError(f"now must carry a UTC offset (e.g. 2026-11-03T00:00:00Z); got {config.now!r}")
        now = instant.timestamp()
    target = Target.from_env(feast.settings(), redis.url)
    report = enforce(target, RetentionSettings(), now=now, dry_run=config.dry_run, actor="dagster",
                     lateness=event_time.lateness())
    counts = {store: len(v) if isinstance(v, list) else v for store, v in report.items()}
    context.log.info("retention %s: %s", "(dry run)" if config.dry_run else "", counts)
    # A day whose decisions are gone is no longer a decision_days partition (the UI lists only days with data).
    emptied = decision_days_without_data(context.instance, target.settings.data_dir / DECISION_TRACE)
    if not config.dry_run:
        for day in emptied:
            context.instance.delete_dynamic_partition(DECISION_DAYS.name, day)
    context.add_output_metadata({"deleted": dg.MetadataValue.json(counts), "dry_run": config.dry_run,
                                 "decision_days_removed": dg.MetadataValue.json(emptied)})
    return report


@dg.job(description="Erase one user from every store (config: user_id, reason); writes an erasure receipt.")
def erasure_job() -> None:
    erase_user()


@dg.job(description="Delete what each store holds beyond its retention period (docs/privacy.md).")
def retention_job() -> None:
    enforce_retention()


retention_schedule = dg.ScheduleDefinition(
    job=retention_job, cron_schedule="45 3 * * *", default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Nightly: enforce every store's retention period.",
)
