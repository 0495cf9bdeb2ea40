"""Retention: each store keeps data for its period (RetentionSettings, docs/privacy.md), and this deletes the rest.

- lake partitions are dated by their data (arrival day, decision date): a partition goes once its whole day is
  older than the period as of `now` (the clock of the data: simulated time in the demo, else the wall clock);
- Redis stream entries are dated by their ids (the server's wall clock) and trimmed only up to what the drain's
  group has delivered and has no pending entry for (everything trimmed is in the lake);
- write-ahead segments of finished writers, log files, the audit trail and receipts are dated by modification time.

Activity tile partitions are folded into the lake's running tiles before they go (`feature_repo.lake_fold`): the
activity features are cumulative, and the fold keeps every later snapshot and the Redis tiles bit-identical to
what the deleted days gave.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import redis

from feature_repo.event_time import Lateness
from feature_repo.lake_fold import fold_expiring, read_lake_fold, write_lake_fold
from infra.audit import default_log
from infra.erasure import redis_store
from infra.erasure.landing import landing_dir
from infra.erasure.procedure import Target
from infra.erasure.settings import RetentionSettings
from infra.redis_cluster import redis_client
from serving.store.decision_log import DRAIN_GROUP, parse_stream_id

DAY_S = 86_400.0
DAY = re.compile(r"(\d{4}-\d{2}-\d{2})")
LAKE_TABLES = {
    "raw/events": "raw_events_days",
    "validated/events": "validated_events_days",
    "quarantine/events": "quarantine_days",
    "quarantine/stream": "quarantine_days",
    "features/activity_tiles": "features_days",
    "features/user_activity": "features_days",
    "decisions": "decision_log_days",
    "outcomes": "decision_log_days",
    "decision_outcomes": "decision_log_days",
    "consent": "consent_days",
}
"""Lake folder → the RetentionSettings field of its period (folders of dagster_project/resources/data_lake.py and
dagster_project/assets/decisions.py)."""


def _day_start(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()


def expired_partitions(data_dir: Path, retention: RetentionSettings, now: float) -> list[Path]:
    """Partition files whose day ended more than their table's period before `now`."""
    found = []
    for table, field in LAKE_TABLES.items():
        days = getattr(retention, field)
        root = data_dir / table
        if not days or not root.is_dir():
            continue
        cutoff = now - days * DAY_S
        for path in sorted(root.rglob("*.parquet")):
            match = DAY.search(str(path.relative_to(root)))
            if match and _day_start(match.group(1)) + DAY_S <= cutoff and "rejected" not in path.parts:
                found.append(path)
    return found


def expired_landing(folder: Path, retention: RetentionSettings, now: float) -> list[Path]:
    """Day files of the landing folder (`events/<day>.<fmt>`) older than the raw events' period: ingestion has
    landed them in the raw lake, which keeps them that long."""
    days = retention.raw_events_days
    if not days or not (folder / "events").is_dir():
        return []
    cutoff = now - days * DAY_S
    return [p for p in sorted((folder / "events").iterdir())
            if (match := DAY.match(p.name)) and _day_start(match.group(1)) + DAY_S <= cutoff]


def _old_files(paths: list[Path], days: int, wall: float) -> list[Path]:
    return [p for p in paths if days and p.is_file() and p.stat().st_mtime <= wall - days * DAY_S]


def _writer_ended(directory: Path) -> bool:
    """Whether a write-ahead writer's process is gone (its lock can be taken; serving/store/wal.py)."""
    lock = directory / "lock"
    if not lock.exists():
        return True
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def trim_streams(client: redis.Redis, days: int, wall: float, dry_run: bool) -> dict[str, int]:
    """XTRIM MINID each stream to the period, never past what the drain group delivered and holds no pending for."""
    trimmed: dict[str, int] = {}
    for stream in redis_store.STREAMS:
        if not days or not client.exists(stream):
            continue
        bound = (int((wall - days * DAY_S) * 1000), 0)
        groups = [g for g in client.xinfo_groups(stream) if redis_store._text(g["name"]) == DRAIN_GROUP]
        if not groups:
            continue  # never drained: nothing here is in the lake yet
        delivered = parse_stream_id(redis_store._text(groups[0]["last-delivered-id"]))
        bound = min(bound, (delivered[0], delivered[1] + 1))
        pending = client.xpending(stream, DRAIN_GROUP)
        if pending["pending"]:
            bound = min(bound, parse_stream_id(redis_store._text(pending["min"])))
        minid = f"{bound[0]}-{bound[1]}"
        if dry_run:
            trimmed[stream] = len(client.xrange(stream, max=f"({minid}"))
        else:
            trimmed[stream] = int(client.xtrim(stream, minid=minid, approximate=False))
    return trimmed


TILES_TABLE = "features/activity_tiles"


def fold_expiring_tiles(data_dir: Path, expiring: list[Path], lateness: Lateness, dry_run: bool) -> dict[str, Any]:
    """Fold the expiring activity tile partitions among `expiring` into the lake fold (written unless `dry_run`);
    what was folded, for the report."""
    root = data_dir / TILES_TABLE
    parts = {p.stem: p for p in expiring if p.parent == root}
    if not parts:
        return {}
    kept = {p.stem: pd.read_parquet(p, columns=["day"]) for p in sorted(root.glob("*.parquet"))
            if p.stem not in parts}
    current = read_lake_fold(data_dir)
    fold = fold_expiring(current, {k: pd.read_parquet(p) for k, p in sorted(parts.items())}, kept, lateness)
    if fold is not current and not dry_run:
        write_lake_fold(data_dir, fold)
    return {"through": fold.through, "fold_day": fold.fold_day, "users": len(fold.folds),
            "carried_tiles": len(fold.carried),
            "partitions_folded": sorted(k for k in parts if not current.covers(k))}


def enforce(target: Target, retention: RetentionSettings, now: float | None = None, dry_run: bool = False,
            actor: str = "retention", lateness: Lateness | None = None) -> dict[str, Any]:
    """Delete what each store holds beyond its period; returns what was (or, dry, would be) deleted per store.

    `lateness` is the pipeline's allowed lateness (EventTimeResource; default `Lateness()`): expiring activity tiles
    are folded through the last expiring arrival day minus it before they are deleted."""
    home, data_dir, wall = target.settings.home, target.settings.data_dir, time.time()
    now = wall if now is None else now
    spill_dirs = [d for d in target.spill_root.glob("*/*") if d.is_dir() and _writer_ended(d)] \
        if target.spill_root.is_dir() else []
    files = {
        "lake": expired_partitions(data_dir, retention, now),
        "landing": expired_landing(landing_dir(target.settings), retention, now),
        "decision_spill": _old_files([p for d in spill_dirs for p in d.glob("seg-*.wal")], retention.spill_days, wall),
        "logs": _old_files([p for p in home.rglob("*") if p.suffix in (".log", ".out", ".err", ".complete")
                            and "audit" not in p.relative_to(home).parts and p.name != "redis.log"],
                           retention.logs_days, wall),
        "audit": _old_files(sorted((home / "audit").glob("*.jsonl")) + sorted((home / "erasure").rglob("*.json")),
                            retention.audit_days, wall),
    }
    report: dict[str, Any] = {store: [str(p.relative_to(home)) if p.is_relative_to(home) else str(p) for p in paths]
                              for store, paths in files.items()}
    # Before any tile partition goes: its tiles into the lake fold (a failure here deletes nothing).
    report["activity_fold"] = fold_expiring_tiles(data_dir, files["lake"], lateness or Lateness(), dry_run)
    if not dry_run:
        for paths in files.values():
            for path in paths:
                path.unlink(missing_ok=True)
                _remove_empty_parents(path.parent, home)
    client = redis_client(target.redis_url)  # a stream's commands name one key: the same on a Redis Cluster
    try:
        report["redis_streams"] = trim_streams(client, retention.stream_days, wall, dry_run)
    finally:
        client.close()
    if not dry_run:
        default_log().record(actor, "retention", target="all stores", clock=now,
                             deleted={k: len(v) for k, v in files.items()}, trimmed=report["redis_streams"])
    return report


def _remove_empty_parents(folder: Path, home: Path) -> None:
    """Remove `date=…` style folders left empty (never the table folders themselves)."""
    while folder != home and folder.name.startswith("date=") and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
