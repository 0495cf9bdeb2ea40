"""Retention: each store loses exactly what is older than its period — lake partitions by their day (as of the
data's clock), stream entries only once the lake has them, write-ahead segments of finished writers, old logs and
audit files by age — and a dry run deletes nothing."""

from __future__ import annotations

import json
import os
import time

import pandas as pd
import pytest
import redis

from infra.erasure.procedure import Target
from infra.erasure.retention import enforce
from infra.erasure.settings import RetentionSettings
from serving.store.decision_log import DRAIN_GROUP

NOW = pd.Timestamp("2026-11-01T00:00:00Z").timestamp()
DAY = 86_400


def touch(path, age_days: float = 0.0, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    stamp = time.time() - age_days * DAY
    os.utime(path, (stamp, stamp))


@pytest.fixture
def home(settings, online_redis_url):
    data = settings.data_dir
    frame = pd.DataFrame({"user_id": [1]})
    partitions = {"raw/events": ["2026-07-01", "2026-08-02", "2026-08-03"],
                  "quarantine/events": ["2026-09-30", "2026-10-03"]}
    for table, days in partitions.items():
        for day in days:
            (data / table).mkdir(parents=True, exist_ok=True)
            frame.to_parquet(data / table / f"{day}.parquet")
    for day in ("2025-09-01", "2025-10-01"):
        (data / "decisions" / f"date={day}").mkdir(parents=True)
        frame.to_parquet(data / "decisions" / f"date={day}" / "part-1-0-2-0.parquet")
    touch(settings.home / "landing" / "events" / "2026-07-01.csv.gz")
    touch(settings.home / "landing" / "events" / "2026-10-01.jsonl")
    touch(settings.home / "landing" / "customers.csv")
    spill = settings.home / "serving" / "decision_wal" / "db1-hyperlift_decisions"
    touch(spill / "ended-writer" / "seg-00000000000000000001.wal", age_days=40)
    touch(spill / "ended-writer" / "seg-00000000000000000009.wal", age_days=1)
    touch(settings.home / "dagster" / "storage" / "run" / "compute_logs" / "abc.out", age_days=31)
    touch(settings.home / "dagster" / "storage" / "run" / "compute_logs" / "new.err", age_days=2)
    touch(settings.home / "audit" / "old-1-1.jsonl", age_days=2200)
    touch(settings.home / "audit" / "new-1-1.jsonl", age_days=10)
    return settings, online_redis_url


def target(settings, url) -> Target:
    return Target(settings, url, "salt", settings.home / "serving" / "decision_wal")


def test_each_store_loses_what_is_older_than_its_period(home):
    settings, url = home
    client = redis.Redis.from_url(url)
    old_ms, new_ms = int((time.time() - 9 * DAY) * 1000), int((time.time() - 1 * DAY) * 1000)
    for i, ms in enumerate([old_ms, old_ms + 1, old_ms + 2, new_ms]):
        client.xadd("hyperlift:decisions", {"record": json.dumps({"i": i})}, id=f"{ms}-0")
    client.xgroup_create("hyperlift:decisions", DRAIN_GROUP, id="0")
    client.xreadgroup(DRAIN_GROUP, "dagster", {"hyperlift:decisions": ">"}, count=2)
    client.xack("hyperlift:decisions", DRAIN_GROUP, f"{old_ms}-0")  # the second stays pending: not in the lake yet
    client.xadd("hyperlift:outcomes", {"record": "{}"}, id=f"{old_ms}-0")  # never drained: kept

    dry = enforce(target(settings, url), RetentionSettings(), now=NOW, dry_run=True)
    assert dry["lake"] == ["data/raw/events/2026-07-01.parquet", "data/raw/events/2026-08-02.parquet",
                           "data/quarantine/events/2026-09-30.parquet",
                           "data/decisions/date=2025-09-01/part-1-0-2-0.parquet"]
    assert (settings.data_dir / "raw/events/2026-07-01.parquet").exists() and client.xlen("hyperlift:decisions") == 4

    report = enforce(target(settings, url), RetentionSettings(), now=NOW)
    assert report == {**dry, "redis_streams": {"hyperlift:decisions": 1}}
    assert sorted(p.name for p in (settings.data_dir / "raw/events").iterdir()) == ["2026-08-03.parquet"]
    assert not (settings.data_dir / "decisions" / "date=2025-09-01").exists()
    spill = "serving/decision_wal/db1-hyperlift_decisions/ended-writer/seg-00000000000000000001.wal"
    assert report["decision_spill"] == [spill]
    assert report["landing"] == ["landing/events/2026-07-01.csv.gz"]
    assert report["logs"] == ["dagster/storage/run/compute_logs/abc.out"]
    assert report["audit"] == ["audit/old-1-1.jsonl"]
    assert [i.decode() for i, _ in client.xrange("hyperlift:decisions")] == [f"{old_ms + 1}-0", f"{old_ms + 2}-0",
                                                                             f"{new_ms}-0"]
    assert client.xlen("hyperlift:outcomes") == 1
    client.close()


def test_a_period_of_zero_keeps_everything(home):
    settings, url = home
    keep = RetentionSettings(raw_events_days=0, quarantine_days=0, decision_log_days=0, spill_days=0, logs_days=0,
                             audit_days=0, stream_days=0)
    report = enforce(target(settings, url), keep, now=NOW)
    assert report == {"lake": [], "landing": [], "decision_spill": [], "logs": [], "audit": [], "activity_fold": {},
                      "redis_streams": {}}


def test_expiring_activity_tiles_are_folded_before_they_go(home):
    from feature_repo.event_time import Lateness
    from feature_repo.lake_fold import read_lake_fold
    from feature_repo.transforms import merge_tiles
    from tests.feature_repo.test_lake_fold import _partitions

    settings, online_redis_url = home
    parts = _partitions(9)  # arrival days 2025-01-01 … 2025-03-01, late by up to 2 days
    root = settings.data_dir / "features/activity_tiles"
    root.mkdir(parents=True)
    for key, tiles in parts.items():
        tiles.to_parquet(root / f"{key}.parquet", index=False)
    now = pd.Timestamp("2025-02-21T00:00:00Z").timestamp()  # 30 days kept: arrival days up to 2025-01-21 expire
    keep = RetentionSettings(features_days=30)
    expired = sorted(k for k in parts if k <= "2025-01-21")

    dry = enforce(target(settings, online_redis_url), keep, now=now, dry_run=True)
    assert dry["activity_fold"]["partitions_folded"] == expired and dry["activity_fold"]["through"] == "2025-01-21"
    assert read_lake_fold(settings.data_dir).through is None and len(list(root.iterdir())) == len(parts)

    report = enforce(target(settings, online_redis_url), keep, now=now, lateness=Lateness(2))
    assert [p for p in report["lake"] if "activity_tiles" in p] == [
        f"data/features/activity_tiles/{k}.parquet" for k in expired]
    fold = read_lake_fold(settings.data_dir)
    assert (fold.through, report["activity_fold"]["through"]) == ("2025-01-21", "2025-01-21")
    assert sorted(p.stem for p in root.iterdir()) == sorted(k for k in parts if k > "2025-01-21")
    everything = merge_tiles(*parts.values())
    left = fold.tiles_with(*(pd.read_parquet(p) for p in sorted(root.iterdir())))
    for column in ("views", "purchases", "revenue_micros"):
        assert int(fold.folds[column].sum() + left[column].sum()) == int(everything[column].sum())
    # A second run a day later folds one more partition onto the fold.
    again = enforce(target(settings, online_redis_url), keep, now=now + DAY)
    assert again["activity_fold"]["partitions_folded"] == ["2025-01-22"]
    assert read_lake_fold(settings.data_dir).through == "2025-01-22"
