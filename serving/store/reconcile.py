"""Reconciliation of the decision log: decisions served against decisions in the lake, per trace writer.

Every trace writer (one per service process) publishes its counters to `<stream>:wal_writers` about once a second:
records handed to it by requests (`appended`: the decisions it served), records in its write-ahead file
(`written`), drops by reason. The drain's receipts (serving/store/wal_acks.py) say how many distinct records of each
writer are in the lake. So, per writer and in total:

    served = logged + in flight (written, not yet drained) + dropped (by reason) + queued (in memory, live writers)

`unaccounted` is what the identity leaves over for a writer that has stopped (queued must be 0 then): it should
always be 0. A live writer's counters are up to `decision_log_ack_poll_s` old, so its figures are approximate (logged
can briefly exceed served); a stopped writer's are final. `missing_ids` lists the decision ids still in flight when
a write-ahead folder is given (the records on local disk the lake does not have yet).

Usage (REDIS_URL and HYPERLIFT_HOME from the environment, as the service reads them):
    python -m serving.store.reconcile [--lake PATH] [--wal-dir PATH]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis

from infra.redis_cluster import redis_client
from serving.core.config import ServingSettings
from serving.store.decision_log import DECISION_STREAM, DRAIN_GROUP
from serving.store.wal import RECORD, SEGMENT_PREFIX, SEGMENT_SUFFIX, Entry, destination_dir, parse
from serving.store.wal_acks import WalAcks, WriterAcks, writers_key


@dataclass(frozen=True)
class WriterReconciliation:
    """One writer's served / logged / in-flight / dropped records."""

    writer: str
    served: int
    written: int
    logged: int
    dropped: dict[str, int]
    live: bool  # its process was running at its last report (else: a finished writer's final counts)
    released: int = 0  # deleted from disk over the budget before the lake confirmed them: at Redis's mercy

    @property
    def missing(self) -> int:
        """Served but not (yet) in the lake."""
        return max(0, self.served - self.logged)

    @property
    def in_flight(self) -> int:
        """Written to disk and on its way (stream or local file), not yet drained."""
        return max(0, self.written - self.logged)

    @property
    def unaccounted(self) -> int:
        """Missing records neither in flight nor counted as dropped: records still queued in memory for a live
        writer, a defect for a finished one."""
        return self.missing - self.in_flight - sum(self.dropped.values())


@dataclass(frozen=True)
class Reconciliation:
    """The decision log's books across writers."""

    writers: list[WriterReconciliation]
    missing_ids: list[str] = field(default_factory=list)

    def total(self, name: str) -> int:
        """Sum of one field (served, written, logged, missing, in_flight, unaccounted, released) over writers."""
        return sum(getattr(w, name) for w in self.writers)

    def dropped(self) -> dict[str, int]:
        """Drops by reason over writers."""
        out: dict[str, int] = {}
        for writer in self.writers:
            for reason, n in writer.dropped.items():
                out[reason] = out.get(reason, 0) + n
        return out

    def finished_unaccounted(self) -> int:
        """Unaccounted records of writers that have stopped: must be 0."""
        return sum(w.unaccounted for w in self.writers if not w.live)

    def as_dict(self) -> dict:
        """JSON-ready summary plus per-writer rows."""
        names = ("served", "written", "logged", "missing", "in_flight", "unaccounted", "released")
        return {
            **{name: self.total(name) for name in names},
            "dropped": self.dropped(),
            "finished_unaccounted": self.finished_unaccounted(),
            "missing_ids": self.missing_ids,
            "writers": [{**asdict(w), **{n: getattr(w, n) for n in ("missing", "in_flight", "unaccounted")}}
                        for w in self.writers],
        }


def reconcile(
    client: redis.Redis, lake_root: Path, stream: str = DECISION_STREAM, group: str = DRAIN_GROUP,
    wal_dir: Path | None = None,
) -> Reconciliation:
    """Compare each writer's served decisions with the lake's receipts; with `wal_dir` (a destination folder of
    write-ahead files), list the decision ids on disk that the lake does not have."""
    receipts = WalAcks(Path(lake_root) / f"_wal_acks.{group}.json").writers
    reports = {_text(k): json.loads(v) for k, v in client.hgetall(writers_key(stream)).items()}
    writers = []
    for writer in sorted(reports.keys() | receipts.keys()):
        report = reports.get(writer, {})
        dropped = {k: int(v) for k, v in report.get("dropped", {}).items()}
        logged = receipts.get(writer, WriterAcks()).logged - dropped.get("damaged_on_disk", 0)
        writers.append(WriterReconciliation(
            writer, int(report.get("appended", 0)), int(report.get("written", 0)), max(0, logged), dropped,
            bool(report.get("live", False)), int(report.get("released_unconfirmed", 0)),
        ))
    return Reconciliation(writers, missing_decision_ids(wal_dir, receipts) if wal_dir is not None else [])


def missing_decision_ids(wal_dir: Path, receipts: dict[str, WriterAcks]) -> list[str]:
    """decision_id of every record in the write-ahead folders under `wal_dir` that the receipts do not cover."""
    missing = []
    for folder in sorted(p for p in Path(wal_dir).iterdir() if p.is_dir()):
        acks = receipts.get(folder.name, WriterAcks())
        for segment in sorted(folder.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}")):
            for entry in parse(segment.read_bytes()):
                if isinstance(entry, Entry) and entry.kind == RECORD and not _covered(acks, entry.seq):
                    missing.append(json.loads(entry.payload).get("decision_id"))
    return missing


def _covered(acks: WriterAcks, seq: int) -> bool:
    return seq <= acks.acked or any(lo <= seq <= hi for lo, hi in acks.ranges)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def main() -> None:
    """Print the reconciliation as JSON; exit 1 when a finished writer has unaccounted records or anything dropped."""
    settings = ServingSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", type=Path, default=settings.platform().data_dir / "decisions")
    parser.add_argument("--wal-dir", type=Path,
                        default=destination_dir(settings.wal_root(), settings.redis_url, settings.decision_stream))
    args = parser.parse_args()
    client = redis_client(settings.redis_url)  # one server, or a cluster (the stream's keys share one slot)
    result = reconcile(client, args.lake, settings.decision_stream,
                       wal_dir=args.wal_dir if args.wal_dir.is_dir() else None)
    print(json.dumps(result.as_dict(), indent=2))
    raise SystemExit(1 if result.finished_unaccounted() or sum(result.dropped().values()) else 0)


if __name__ == "__main__":
    main()
