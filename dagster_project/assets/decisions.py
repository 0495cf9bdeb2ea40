"""Decision log: the decision and outcome streams drained into the lake, and each day's decisions with their outcomes.

Lake layout: `decisions/date=YYYY-MM-DD/part-*.parquet`, `outcomes/date=.../part-*.parquet` and
`consent/date=.../part-*.parquet` (one file per drained batch and UTC date of the record's `ts`, read back
deduplicated with `serving.store.decision_log.read_partitions`), and
`decision_outcomes/date=YYYY-MM-DD.parquet` (one file per partition: the day's decisions + converted, revenue,
n_outcomes). The partitions of decision_outcomes are the days that hold decisions and are over
(`dagster_project.partitions.DECISION_DAYS`, a dynamic set the drain adds to), never an open-ended calendar.
"""

import datetime as dt
import math
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from dagster_project.partitions import DECISION_DAYS, complete_decision_days, unregistered_decision_days
from dagster_project.resources import DataLakeResource, RedisResource
from dagster_project.resources.event_time import clock_ts
from serving.store.decision_log import (
    CONSENT_FORMAT,
    DECISION_FORMAT,
    OUTCOME_FORMAT,
    QUARANTINE_FORMAT,
    DrainResult,
    RecordFormat,
    StreamDrain,
    partition_dates,
    read_partitions,
    stream_backlog,
)
from training.consent import revoked_users
from training.outcome_join import join_outcomes
from training.retrain import label_log

DECISION_TRACE = "decisions"
OUTCOME_EVENTS = "outcomes"
STREAM_QUARANTINE = "quarantine/stream"  # events refused by POST /v1/events, by date received
CONSENT_EVENTS = "consent"  # consent calls (POST /v1/consent), by the date of the event
DECISION_OUTCOMES = "decision_outcomes"
GROUP = "decision_log"
# decision_outcomes' partitions (DECISION_DAYS, imported above): the UTC dates that hold decisions and are over.


def revoked_in_lake(lake: DataLakeResource) -> pd.DataFrame:
    """Users whose consent event in effect (over the consent lake) is a revocation (training.consent.revoked_users);
    empty when no consent call was ever drained."""
    root = lake.path(CONSENT_EVENTS)
    events = read_partitions(root, record_format=CONSENT_FORMAT) if root.exists() else None
    if events is None or events.empty:
        return pd.DataFrame({"user_id": pd.Series(dtype="int64"), "user_key": pd.Series(dtype=str),
                             "purpose": pd.Series(dtype=str), "ts": pd.Series(dtype=float)})
    return revoked_users(events)


def decision_outcomes_table(day: str | dt.date) -> str:
    """Lake table of one decision_outcomes partition."""
    return f"{DECISION_OUTCOMES}/date={day}.parquet"


class DrainConfig(dg.Config):
    """How a stream is drained."""

    consumer: str = "dagster"  # one name across runs: a crashed run's pending entries are re-read by the next
    batch: int = Field(default=10_000, ge=1, description="Entries per read, and at most per parquet file.")
    claim_idle_ms: int = Field(
        default=600_000, ge=0, description="Take over entries pending this long on another consumer (crashed)."
    )


class AttributionConfig(dg.Config):
    """How outcomes are attributed to decisions, and the clock that says whether a day's windows have closed."""

    attribution_window_hours: float = Field(default=72.0, gt=0)
    now: str | None = None  # ISO-8601 instant (simulated time); unset: the wall clock


class DecisionDrainConfig(DrainConfig):
    """A drain of the decision stream, and the clock that says which days are over (their partitions are added)."""

    now: str | None = None  # ISO-8601 instant (simulated time, e.g. the demo's shop clock); unset: the wall clock


def _drain(
    context: dg.AssetExecutionContext, config: DrainConfig, redis: RedisResource, stream: str, root: Path,
    record_format: RecordFormat,
) -> dg.MaterializeResult:
    client = redis.client()
    result: DrainResult = StreamDrain(
        client, stream, redis.drain_group, config.consumer, root, record_format, config.batch, config.claim_idle_ms
    ).drain()
    context.log.info(
        "%s: read %d, wrote %d rows in %d files, rejected %d, missing %d, claimed %d",
        stream, result.read, result.written, len(result.files), result.rejected, result.missing, result.claimed,
    )
    if result.rejected:
        context.log.warning("%s: %d records could not be stored; see %s/rejected/", stream, result.rejected, root)
    return dg.MaterializeResult(
        metadata={
            "read": result.read,
            "written": result.written,
            "acked": result.acked,
            "claimed": result.claimed,
            "rejected": result.rejected,
            "missing": result.missing,
            "overrun": result.overrun,
            "files": len(result.files),
            "dates": dg.MetadataValue.json(sorted({p.parent.name.removeprefix("date=") for p in result.files})),
            "backlog_after": stream_backlog(client, stream, redis.drain_group),
            "path": str(root),
        }
    )


@dg.asset(group_name=GROUP)
def decision_trace(
    context: dg.AssetExecutionContext, config: DecisionDrainConfig, lake: DataLakeResource, redis: RedisResource
) -> dg.MaterializeResult:
    """Drain the decision stream into decisions/date=…/: written, then acknowledged, so nothing is lost; then add
    every day of the lake that holds decisions and is over to the decision_days partitions."""
    root = lake.path(DECISION_TRACE)
    result = _drain(context, config, redis, redis.decision_stream, root, DECISION_FORMAT)
    # Days of earlier drains count too: a day still open when it was drained is added by the first drain after it.
    added = register_decision_days(context.instance, complete_decision_days(root, clock_ts(config.now)))
    if added:
        context.log.info("decision_days partitions added: %s", added)
    return dg.MaterializeResult(metadata={**result.metadata, "partitions_added": dg.MetadataValue.json(added)})


def register_decision_days(instance: dg.DagsterInstance, days: list[str]) -> list[str]:
    """Add the given days to DECISION_DAYS on the instance (those it lacks); returns the days added."""
    added = unregistered_decision_days(instance, days)
    if added:
        instance.add_dynamic_partitions(DECISION_DAYS.name, added)
    return added


@dg.asset(group_name=GROUP)
def outcome_events(
    context: dg.AssetExecutionContext, config: DrainConfig, lake: DataLakeResource, redis: RedisResource
) -> dg.MaterializeResult:
    """Drain the outcome stream (purchases, conversions) into outcomes/date=…/."""
    return _drain(context, config, redis, redis.outcome_stream, lake.path(OUTCOME_EVENTS), OUTCOME_FORMAT)


@dg.asset(group_name=GROUP)
def stream_quarantine(
    context: dg.AssetExecutionContext, config: DrainConfig, lake: DataLakeResource, redis: RedisResource
) -> dg.MaterializeResult:
    """Drain the events refused by POST /v1/events (as received, with rule and reason) into quarantine/stream/."""
    return _drain(context, config, redis, redis.quarantine_stream, lake.path(STREAM_QUARANTINE), QUARANTINE_FORMAT)


@dg.asset(group_name=GROUP)
def consent_events(
    context: dg.AssetExecutionContext, config: DrainConfig, lake: DataLakeResource, redis: RedisResource
) -> dg.MaterializeResult:
    """Drain the consent audit stream (every POST /v1/consent, applied or not) into consent/date=…/: what training
    leaves out (training.consent.revoked_users) and what the decision log is checked against."""
    return _drain(context, config, redis, redis.consent_stream, lake.path(CONSENT_EVENTS), CONSENT_FORMAT)


@dg.asset(partitions_def=DECISION_DAYS, deps=[decision_trace, outcome_events], group_name=GROUP)
def decision_outcomes(
    context: dg.AssetExecutionContext, config: AttributionConfig, lake: DataLakeResource
) -> dg.MaterializeResult:
    """One day's decisions with the outcomes attributed to them (by decision_id, else last touch in the window)."""
    day = dt.date.fromisoformat(context.partition_key)
    window = dt.timedelta(hours=config.attribution_window_hours)
    span = math.ceil(window / dt.timedelta(days=1))
    # Each outcome is reported unmatched once: by the partition of its own date, or, on a date without decisions
    # (no partition), by the latest decision day before it. This day reports the dates up to the next decision day.
    later = sorted(d for d in context.instance.get_dynamic_partitions(DECISION_DAYS.name) if d > context.partition_key)
    until = dt.date.fromisoformat(later[0]) if later else dt.date.max
    reported = [d for d in partition_dates(lake.path(OUTCOME_EVENTS)) if day <= d < until]
    # Outcomes of this day's decisions happen up to `window` after the day; the decisions competing with them for
    # last touch happen up to `window` before those outcomes, so both reads reach past the day itself.
    decisions = read_partitions(lake.path(DECISION_TRACE), _days(day - dt.timedelta(span), span * 2 + 1),
                                DECISION_FORMAT)
    outcomes = read_partitions(lake.path(OUTCOME_EVENTS), sorted({*_days(day, span + 1), *reported}), OUTCOME_FORMAT)
    join = join_outcomes(decisions, outcomes, window)
    start = dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()
    end = start + 86_400.0
    rows = join.decisions[(join.decisions["ts"] >= start) & (join.decisions["ts"] < end)].reset_index(drop=True)
    report_end = dt.datetime.combine(until, dt.time(), dt.UTC).timestamp() if later else float("inf")
    unmatched = join.unmatched_counts((join.outcomes["ts"] >= start) & (join.outcomes["ts"] < report_end))
    path = lake.write(decision_outcomes_table(day), rows)
    now = clock_ts(config.now)
    window_closed = now >= end + window.total_seconds()
    # While windows are open the realised revenue is short: add the expected remainder of the pending decisions
    # (delay model fitted on the log as of now, training/retrain.py), and mark the partition interim.
    day_ids = set(rows["decision_id"])
    labelled = label_log(decisions, outcomes, now, config.attribution_window_hours).decisions
    corrected = float(labelled.loc[labelled["decision_id"].isin(day_ids), "label_revenue"].sum())
    context.log.info(
        "%s: %d decisions, %d converted, %d outcomes attributed, %d of the day's outcomes unmatched %s",
        day, len(rows), int(rows["converted"].sum()), int(rows["n_outcomes"].sum()), sum(unmatched.values()), unmatched,
    )
    if not window_closed:
        context.log.warning("%s: the attribution window is still open; rematerialize after it closes", day)
    return dg.MaterializeResult(
        metadata={
            "decisions": len(rows),
            "converted": int(rows["converted"].sum()),
            "revenue": float(rows["revenue"].sum()),
            "outcomes_attributed": int(rows["n_outcomes"].sum()),
            "unmatched_outcomes": sum(unmatched.values()),
            "unmatched_by_reason": dg.MetadataValue.json(unmatched),
            "attribution_window_hours": config.attribution_window_hours,
            "window_closed": window_closed,
            "status": "final" if window_closed else "interim",
            "window_closes_at": end + window.total_seconds(),
            "revenue_delay_corrected": corrected,
            "now": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(),
            "path": str(path),
        }
    )


def _days(first: dt.date, n: int) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range(n)]
