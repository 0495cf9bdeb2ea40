"""The decision-log check: served decisions against the lake's receipts, failing (as a warning) on any drop."""

import dagster as dg
import redis

from dagster_project.assets.decisions import decision_trace
from dagster_project.checks.decision_log import decision_log_reconciled
from dagster_project.resources import DataLakeResource, RedisResource
from serving.store.decision_log import DECISION_STREAM
from serving.store.trace import DISK_BUDGET, TraceWriter


def served(url: str, wal_dir, n: int, budget: int | None = None) -> None:
    """A trace writer that serves n decisions (the last one over a disk budget when `budget` is set), then stops."""
    writer = TraceWriter(redis.Redis.from_url(url), DECISION_STREAM, 100_000, wal_dir)
    for i in range(n):
        if budget is not None and i == n - 1:
            writer.max_bytes = budget
        writer.append({"decision_id": f"{wal_dir.name}-{i}", "ts": 1_790_899_200.0})
        writer.flush(10)
    writer.close()


def check(resources) -> dg.AssetCheckEvaluation:
    result = dg.materialize([decision_trace, decision_log_reconciled], resources=resources)
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def test_the_check_passes_when_every_served_decision_is_logged_and_fails_on_a_drop(redis_databases, settings, tmp_path):
    url = redis_databases.fresh()
    resources = {"lake": DataLakeResource(root=str(settings.data_dir)), "redis": RedisResource(url=url)}
    served(url, tmp_path / "a", 3)
    passed = check(resources)
    assert passed.passed and (passed.metadata["served"].value, passed.metadata["logged"].value) == (3, 3)
    served(url, tmp_path / "b", 2, budget=1)
    failed = check(resources)
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.WARN
    assert (failed.metadata["served"].value, failed.metadata["logged"].value) == (5, 4)
    assert failed.metadata["dropped"].value == {DISK_BUDGET: 1}
