"""Decision-log checks: every decision the service served is in the lake or on its way, and none was dropped."""

import dagster as dg

from dagster_project.assets.decisions import DECISION_TRACE
from dagster_project.resources import DataLakeResource, RedisResource
from serving.store.reconcile import reconcile


@dg.asset_check(asset="decision_trace", description="Served decisions = logged + in flight; nothing dropped.")
def decision_log_reconciled(lake: DataLakeResource, redis: RedisResource) -> dg.AssetCheckResult:
    """The trace writers' counters against the drain's receipts (serving/store/reconcile.py); fails (warning) when
    a record was dropped or a finished writer has records neither logged, in flight nor counted."""
    result = reconcile(redis.client(), lake.path(DECISION_TRACE), redis.decision_stream, redis.drain_group)
    dropped = result.dropped()
    return dg.AssetCheckResult(
        passed=not dropped and not result.finished_unaccounted(),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "served": result.total("served"),
            "logged": result.total("logged"),
            "in_flight": result.total("in_flight"),
            "dropped": dg.MetadataValue.json(dropped),
            "finished_unaccounted": result.finished_unaccounted(),
            "released_unconfirmed": result.total("released"),
            "writers": len(result.writers),
        },
    )
