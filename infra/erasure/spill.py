"""The decision log's write-ahead files (serving/store/wal.py): the user's records anonymised in place.

A record there may not have reached the lake yet, and will be sent to Redis and drained later, so it is not
deleted (the writer would count a gap in its sequence as lost records) but rewritten as the anonymised decision
(infra/erasure/anonymise.py), the same record the lake and the stream keep. The new line has the same length (the
JSON is padded with spaces, which JSON ignores) and a fresh CRC, so offsets, sequence numbers and a running
writer's cursor stay valid; it is written with one pwrite over the old line (the writer only appends).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from infra.erasure.anonymise import Anonymiser
from infra.erasure.receipt import StoreReport
from infra.erasure.subject import Subject
from serving.store.wal import RECORD, SEGMENT_PREFIX, SEGMENT_SUFFIX, Entry, _head, parse

OPTIONAL_FIELDS = ("latency_ms", "experiments", "scores")
"""Dropped, in this order, only if an anonymised record would not fit in the old line (never seen: the logged
features it drops are most of a record)."""


def segments(root: Path) -> list[Path]:
    """Every write-ahead segment under `root` (all destinations, all writers)."""
    return sorted(Path(root).rglob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}")) if Path(root).is_dir() else []


def anonymised_payload(record: dict, width: int, anonymiser: Anonymiser) -> bytes:
    """The anonymised record as JSON of exactly `width` bytes."""
    changed = anonymiser.decision(record)
    for name in (None, *OPTIONAL_FIELDS):
        if name is not None:
            changed.pop(name, None)
        payload = json.dumps(changed, separators=(",", ":"), ensure_ascii=False).encode()  # as orjson wrote it
        if len(payload) <= width:
            return payload + b" " * (width - len(payload))
    raise ValueError(f"decision {record.get('decision_id')}: an anonymised record does not fit its line")


def erase_spill(root: Path, home: Path, subject: Subject, anonymiser: Anonymiser, report: StoreReport) -> None:
    """Anonymise the user's records in every segment under `root`."""
    needles = [key.encode() for key in subject.user_keys]
    for path in segments(root):
        data = path.read_bytes()
        if not any(needle in data for needle in needles):
            continue
        changed = 0
        fd = os.open(path, os.O_WRONLY)
        try:
            pos = 0
            while (end := data.find(b"\n", pos)) >= 0:
                entry, begin, pos = next(parse(data, pos)), pos, end + 1
                if not isinstance(entry, Entry) or entry.kind != RECORD or not any(n in entry.payload for n in needles):
                    continue
                record = json.loads(entry.payload)
                if not subject.owns_record(record):
                    continue
                payload = anonymised_payload(record, len(entry.payload), anonymiser)
                os.pwrite(fd, _head(RECORD, entry.seq, payload) + payload, begin)  # same length: "%s %d %08x "
                changed += 1
            os.fsync(fd)
        finally:
            os.close(fd)
        if changed:
            report.entries_anonymised += changed
            report.files_rewritten.append(str(path.relative_to(home)) if path.is_relative_to(home) else str(path))


def export_spill(root: Path, subject: Subject) -> list[dict]:
    """The user's records in the write-ahead files (not yet confirmed in the lake)."""
    needles = [key.encode() for key in subject.user_keys]
    found = []
    for path in segments(root):
        data = path.read_bytes()
        if any(needle in data for needle in needles):
            for entry in parse(data):
                if isinstance(entry, Entry) and entry.kind == RECORD and any(n in entry.payload for n in needles):
                    record = json.loads(entry.payload)
                    if subject.owns_record(record):
                        found.append(record)
    return found
