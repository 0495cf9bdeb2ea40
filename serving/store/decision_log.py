"""The decision log: every decision appended to a Redis Stream, drained to daily parquet partitions exactly once.

Storage contract of a drained stream (`root/date=YYYY-MM-DD/part-<first-id>-<last-id>.parquet`):
- one row per stream entry, `stream_id` (the Redis entry id) first, then the record's fields;
- the partition is the UTC date of the record's `ts` (epoch seconds), so a batch spanning midnight writes two files;
- lists (candidates, scores, ...) are parquet lists with the declared element type; the fields named in
  `RecordFormat.json_fields` (dicts such as experiments and latency_ms, which may be {}) are JSON text with sorted
  keys; a field the format does not declare is kept, as JSON text, rather than dropped;
- a record that cannot be stored (not JSON, no key, no numeric ts, a value of the wrong type) is written as a JSON
  line under `root/rejected/` with the reason, then acknowledged: kept for replay, never blocking the stream.
Readers dedupe (`read_partitions`): first by stream_id, then by the format's key (decision_id / outcome_id),
keeping the earliest entry — a crash between write and ack, a producer retry, or a trace writer resending after a
Redis restart, leaves no duplicate behind.

Entries that carry a `wal` field (the decision trace writer's `writer:seq:floor`) are receipted once in the lake:
`<root>/_wal_acks.<group>.json` and the Redis hash `<stream>:wal_acks:<group>` tell each writer which of its records
it may delete from its write-ahead file (serving/store/wal_acks.py).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import redis

from serving.store.wal_acks import WalAcks, acks_key, parse_wal_field

log = logging.getLogger(__name__)

DECISION_STREAM = "hyperlift:decisions"
OUTCOME_STREAM = "hyperlift:outcomes"
DRAIN_GROUP = "lake"  # the consumer group whose acknowledgements mean "this entry is in the parquet lake"
KEY_METADATA = b"hyperlift.key"  # parquet schema metadata: the record field that identifies a record
REJECTED_DIR = "rejected"


@dataclass(frozen=True)
class RecordFormat:
    """How one stream's JSON records become parquet columns: declared types, JSON-text fields, the unique key."""

    key: str
    schema: pa.Schema
    json_fields: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        missing = {self.key, "ts", *self.json_fields} - set(self.schema.names)
        if missing:
            raise ValueError(f"record format does not declare {sorted(missing)}")
        if any(self.schema.field(name).type != pa.string() for name in self.json_fields):
            raise ValueError("JSON fields must be declared as pa.string()")

    def table_schema(self, extra: Iterable[str] = ()) -> pa.Schema:
        """The parquet schema of a file: stream_id, the declared fields, then undeclared fields as JSON text."""
        fields = [pa.field("stream_id", pa.string()), *self.schema, *(pa.field(n, pa.string()) for n in sorted(extra))]
        return pa.schema(fields, metadata={KEY_METADATA: self.key.encode()})


DECISION_FORMAT = RecordFormat(
    key="decision_id",
    schema=pa.schema([
        ("decision_id", pa.string()), ("ts", pa.float64()), ("surface", pa.string()), ("region", pa.string()),
        ("policy_version", pa.string()), ("user_key", pa.string()), ("context_hash", pa.string()),
        ("candidates", pa.list_(pa.string())), ("scores", pa.list_(pa.float64())),
        ("probabilities", pa.list_(pa.float64())), ("chosen", pa.list_(pa.string())),
        ("chosen_probabilities", pa.list_(pa.float64())), ("model_name", pa.string()), ("model_version", pa.string()),
        ("feature_service", pa.string()), ("experiments", pa.string()), ("fallback", pa.string()),
        ("latency_ms", pa.string()),
        # version 2 (serving/decision/service.py RECORD_VERSION); null in version-1 records
        ("record_version", pa.int64()), ("positions", pa.list_(pa.int64())),
        ("slot_probabilities", pa.list_(pa.list_(pa.float64()))), ("redraws", pa.int64()),
        ("features", pa.string()), ("masked_features", pa.list_(pa.string())),
    ]),
    json_fields=frozenset({"experiments", "latency_ms", "features"}),
)
"""The decision record (version 2), one per decision; the service writes it (serving/decision/service.py `_respond`):

- `decision_id`, `ts` (the service's clock, epoch seconds), `surface`, `region`, `policy_version` (hash of the
  surface's configuration), `user_key` and `context_hash` (keyed hashes, never raw ids);
- `candidates`: the actions the policy drew from, after eligibility, consent, caps and budgets (neutral first);
  `scores`: each one's score (expected incremental net value + bonus; null when unscored);
  `probabilities`: the first slot's distribution over `candidates`;
- `chosen`: the served actions in slot order, `positions` their slot index (0-based), `chosen_probabilities` each
  slot's probability of its pick given the slots before, `slot_probabilities` each slot's whole distribution over
  `candidates` (0 for candidates already chosen): everything off-policy evaluation of slates needs;
- `redraws`: reservation conflicts before the served slate was kept; > 0 means the logged probabilities are those
  of the redraw, conditional on a conflict that depended on concurrent requests, so estimators leave the row out;
- `model_name`, `model_version`, `feature_service`, `experiments` (experiment → arm), `fallback` (null when the
  policy ran), `latency_ms` per segment;
- `features`: what the service read through the feature service, per feature view:
  `{"<view>": {"event_ts": "<ISO-8601 event time of the row>" | null, "values": {"<feature>": value | null}}}`
  (null when no read was made); `masked_features`: features the consent rules hid from the model (it scored them as
  missing). Training from the log uses these values, never a re-join (training/logged_training.py).
"""
OUTCOME_FORMAT = RecordFormat(
    key="outcome_id",
    schema=pa.schema([
        ("outcome_id", pa.string()), ("ts", pa.float64()), ("user_key", pa.string()), ("decision_id", pa.string()),
        ("kind", pa.string()), ("revenue", pa.float64()),
    ]),
)

QUARANTINE_FORMAT = RecordFormat(
    key="quarantine_id",
    schema=pa.schema([
        ("quarantine_id", pa.string()), ("ts", pa.float64()), ("event_id", pa.string()), ("rule", pa.string()),
        ("reason", pa.string()), ("event", pa.string()),
    ]),
    json_fields=frozenset({"event"}),
)
"""Events refused by `POST /v1/events` (stream `hyperlift:quarantine`): the event as received, rule and reason."""

CONSENT_FORMAT = RecordFormat(
    key="event_id",
    schema=pa.schema([
        ("event_id", pa.string()), ("ts", pa.float64()), ("user_id", pa.int64()), ("user_key", pa.string()),
        ("purpose", pa.string()), ("granted", pa.bool_()), ("source", pa.string()), ("client", pa.string()),
        ("applied", pa.bool_()), ("received", pa.float64()),
    ]),
)
"""Consent calls (`POST /v1/consent`, stream `hyperlift:consent_events`, serving/store/consent.py), applied or not:
the event's time `ts`, the user (pseudonym, as in the lake, and the trace salt's keyed hash), purpose, granted, who
sent it and when the service took it (`received`, its clock)."""


@dataclass(frozen=True)
class DrainResult:
    """What one drain did; read == written + rejected + missing."""

    read: int  # entries read, re-read pending ones included
    written: int  # rows written to parquet
    acked: int  # entries acknowledged to the group
    files: tuple[Path, ...]  # parquet files written (or rewritten after a crash)
    claimed: int = 0  # pending entries taken over from consumers idle longer than claim_idle_ms
    rejected: int = 0  # records that could not be stored, kept as JSON lines under rejected/
    missing: int = 0  # pending entries deleted from the stream (trimmed) before they were written: lost
    overrun: bool = False  # the stream trimmed entries the group had not read yet (Redis >= 7 reports it): lost
    receipted: int = 0  # entries with a `wal` field noted in the write-ahead receipts


@dataclass
class _Tally:
    read: int = 0
    written: int = 0
    acked: int = 0
    rejected: int = 0
    missing: int = 0
    receipted: int = 0
    files: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class _Rejected:
    stream_id: str
    reason: str
    raw: str


def parse_stream_id(stream_id: str) -> tuple[int, int]:
    """`<ms>-<seq>` as a tuple that sorts like Redis does (string order would put 10-0 before 9-0)."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class StreamDrain:
    """Moves one stream into daily parquet partitions through a consumer group: write (atomically), then XACK.

    An entry is acknowledged only after the file holding it is on disk, so a crash at any point leaves it pending;
    the next drain re-reads this consumer's pending entries first (and claims those of consumers idle for
    `claim_idle_ms`), rewriting the same file names. Duplicates that still reach the lake are removed on read.
    """

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        group: str,
        consumer: str,
        root: Path,
        record_format: RecordFormat,
        batch: int = 10_000,
        claim_idle_ms: int = 600_000,
    ):
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.root = Path(root)
        self.record_format = record_format
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        self.acks_path = self.root / f"_wal_acks.{group}.json"
        self._acks: WalAcks | None = None

    def drain(self) -> DrainResult:
        """Claim idle entries, re-process own pending ones, then read new entries up to the stream's current end;
        then publish the write-ahead receipts (also when nothing was new: a restarted Redis gets them back)."""
        self._ensure_group()
        self._acks = WalAcks(self.acks_path)
        overrun = self._overrun()
        tally = _Tally()
        claimed = self._claim_idle(tally)
        cursor = "0"  # id 0: this consumer's pending entries (delivered before, never acknowledged)
        while entries := self._read(cursor):
            self._process(entries, tally)
            cursor = entries[-1][0]
        end = parse_stream_id(_text(self.client.xinfo_stream(self.stream)["last-generated-id"]))
        while entries := self._read(">"):
            self._process(entries, tally)
            if parse_stream_id(entries[-1][0]) >= end:  # a busy producer must not keep one drain running forever
                break
        if self._acks.writers:
            self._acks.publish(self.client, acks_key(self.stream, self.group))
        return DrainResult(
            read=tally.read, written=tally.written, acked=tally.acked, files=tuple(tally.files), claimed=claimed,
            rejected=tally.rejected, missing=tally.missing, overrun=overrun, receipted=tally.receipted,
        )

    def _ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _overrun(self) -> bool:
        """True when the stream deleted entries the group never read (capped stream outpacing the drain)."""
        deleted = self.client.xinfo_stream(self.stream).get("max-deleted-entry-id")  # Redis >= 7 only
        if deleted is None:
            return False
        group = next(g for g in self.client.xinfo_groups(self.stream) if _text(g["name"]) == self.group)
        overrun = parse_stream_id(_text(deleted)) > parse_stream_id(_text(group["last-delivered-id"]))
        if overrun:
            log.error(
                "stream %s trimmed entries group %s had not read (up to %s): they are lost; raise the stream's "
                "maxlen or drain more often", self.stream, self.group, _text(deleted),
            )
        return overrun

    def _claim_idle(self, tally: _Tally) -> int:
        """Take over entries pending on other (crashed) consumers for longer than claim_idle_ms."""
        claimed, start = 0, "0-0"
        while True:
            reply = self.client.xautoclaim(
                self.stream, self.group, self.consumer, self.claim_idle_ms, start, count=self.batch
            )
            start, entries = _text(reply[0]), reply[1]
            claimed += len(entries)  # processed by the pending pass that follows
            if len(reply) > 2 and reply[2]:  # Redis >= 7 drops deleted entries from the group and lists them here
                tally.read += len(reply[2])
                tally.missing += len(reply[2])
                log.error("stream %s: %d pending entries were trimmed before they were drained: lost",
                          self.stream, len(reply[2]))
            if start == "0-0":
                return claimed

    def _read(self, cursor: str) -> list[tuple[str, dict[Any, Any] | None]]:
        reply = self.client.xreadgroup(self.group, self.consumer, {self.stream: cursor}, count=self.batch)
        return [(_text(sid), fields) for _, entries in reply for sid, fields in entries]

    def _process(self, entries: list[tuple[str, dict[Any, Any] | None]], tally: _Tally) -> None:
        """Write one batch (parquet per date, rejected lines), then acknowledge all of it."""
        tally.read += len(entries)
        by_date: dict[str, list[dict[str, Any]]] = defaultdict(list)
        raws: dict[str, str] = {}
        rejected: list[_Rejected] = []
        for stream_id, fields in entries:
            if not fields:  # deleted from the stream while pending: nothing left to write
                tally.missing += 1
                log.error("stream %s entry %s was trimmed before it was drained: lost", self.stream, stream_id)
                continue
            raw = fields.get(b"record", fields.get("record", b""))  # str keys on a decode_responses client
            raws[stream_id] = raw.decode(errors="backslashreplace") if isinstance(raw, bytes) else raw
            row, date, reason = self._row(stream_id, raws[stream_id])
            if reason is None:
                by_date[date].append(row)
            else:
                rejected.append(_Rejected(stream_id, reason, raws[stream_id]))
        for date, rows in sorted(by_date.items()):
            table, bad = self._table(rows)
            rejected += [_Rejected(stream_id, reason, raws[stream_id]) for stream_id, reason in bad]
            if table is not None:
                tally.files.append(self._write(date, table))
                tally.written += table.num_rows
        if rejected:
            self._write_rejected(sorted(rejected, key=lambda r: parse_stream_id(r.stream_id)))
            tally.rejected += len(rejected)
        self._ack([stream_id for stream_id, _ in entries])
        tally.acked += len(entries)
        self._receipt(entries, tally)

    def _receipt(self, entries: list[tuple[str, dict[Any, Any] | None]], tally: _Tally) -> None:
        """Note the `wal` fields of entries now in the lake (parquet or rejected/), saved before the next batch."""
        receipts = [
            wal for _, fields in entries if fields
            if (wal := parse_wal_field(fields.get(b"wal", fields.get("wal")))) is not None
        ]
        if receipts and self._acks is not None:
            self._acks.observe(receipts)
            self._acks.save()
            tally.receipted += len(receipts)

    def _row(self, stream_id: str, raw: str) -> tuple[dict[str, Any], str, str | None]:
        """(row, UTC date, None) for a storable record, else ({}, "", reason)."""
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            return {}, "", f"not JSON: {exc}"
        if not isinstance(record, dict):
            return {}, "", "not a JSON object"
        fmt = self.record_format
        if not isinstance(record.get(fmt.key), str) or not record[fmt.key]:
            return {}, "", f"no {fmt.key}"
        ts = record.get("ts")
        if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
            return {}, "", f"ts is not a finite number: {ts!r}"
        try:
            date = dt.datetime.fromtimestamp(ts, dt.UTC).date().isoformat()
        except (OverflowError, OSError, ValueError) as exc:
            return {}, "", f"ts {ts!r} is not a date: {exc}"
        row: dict[str, Any] = {"stream_id": stream_id}
        for name in fmt.schema.names:
            value = record.get(name)
            # pyarrow turns a string into a list of characters: a list field must hold a list
            if value is not None and pa.types.is_list(fmt.schema.field(name).type) and not isinstance(value, list):
                return {}, "", f"{name} is not a list: {value!r}"
            row[name] = _json_text(value) if name in fmt.json_fields and value is not None else value
        for name in record.keys() - set(fmt.schema.names) - {"stream_id"}:
            row[name] = None if record[name] is None else _json_text(record[name])
        return row, date, None

    def _table(self, rows: list[dict[str, Any]]) -> tuple[pa.Table | None, list[tuple[str, str]]]:
        """Rows as a table of the declared types; rows that do not convert are rejected one by one."""
        try:
            return self._to_table(rows), []
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            pass  # find the offending rows below
        good, bad = [], []
        for row in rows:
            try:
                self._to_table([row])
                good.append(row)
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                bad.append((row["stream_id"], f"wrong type: {exc}"))
        return (self._to_table(good) if good else None), bad

    def _to_table(self, rows: list[dict[str, Any]]) -> pa.Table:
        extra = {name for row in rows for name in row} - {"stream_id", *self.record_format.schema.names}
        return pa.Table.from_pylist(rows, schema=self.record_format.table_schema(extra))

    def _write(self, date: str, table: pa.Table) -> Path:
        first, last = table["stream_id"][0].as_py(), table["stream_id"][-1].as_py()
        path = self.root / f"date={date}" / f"part-{first}-{last}.parquet"
        _atomic_write(path, lambda tmp: pq.write_table(table, tmp))
        return path

    def _write_rejected(self, rejected: list[_Rejected]) -> None:
        path = self.root / REJECTED_DIR / f"part-{rejected[0].stream_id}-{rejected[-1].stream_id}.jsonl"
        lines = "".join(
            json.dumps({"stream_id": r.stream_id, "reason": r.reason, "record": r.raw}) + "\n" for r in rejected
        )
        _atomic_write(path, lambda tmp: tmp.write_text(lines))
        log.warning(
            "stream %s: %d records could not be stored (first: %s, %s); kept in %s",
            self.stream, len(rejected), rejected[0].stream_id, rejected[0].reason, path,
        )

    def _ack(self, stream_ids: list[str]) -> None:
        self.client.xack(self.stream, self.group, *stream_ids)


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a uniquely named temp file, fsync, rename: readers and concurrent writers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself must survive a power cut before the entries are acked
        finally:
            os.close(directory)
    finally:
        tmp.unlink(missing_ok=True)


def stream_backlog(client: redis.Redis, stream: str, group: str) -> int:
    """Entries the group has not acknowledged: pending plus undelivered (on Redis < 7, undelivered counts as 0 or 1)."""
    if not client.exists(stream):
        return 0
    info = next((g for g in client.xinfo_groups(stream) if _text(g["name"]) == group), None)
    if info is None:
        return int(client.xlen(stream))
    lag = info.get("lag")  # Redis >= 7; None there too when deletions make it unknown
    if lag is None:
        after = "(" + _text(info["last-delivered-id"])
        lag = len(client.xrange(stream, min=after, max="+", count=1))
    return int(info["pending"]) + int(lag)


def partition_dates(root: Path) -> list[dt.date]:
    """Dates that have a partition folder under `root`, ascending."""
    return sorted(dt.date.fromisoformat(p.name.removeprefix("date=")) for p in Path(root).glob("date=*") if p.is_dir())


def read_partition(root: Path, date: str | dt.date, record_format: RecordFormat | None = None) -> pd.DataFrame:
    """One day of a drained stream, deduplicated (see `read_partitions`)."""
    return read_partitions(root, [date], record_format)


def read_partitions(
    root: Path, dates: Iterable[str | dt.date] | None = None, record_format: RecordFormat | None = None
) -> pd.DataFrame:
    """Rows of the given days (all days when None) in stream order, each stream_id and each key exactly once.

    The key is the format's (decision_id / outcome_id), else the one recorded in the files' metadata; of rows
    sharing a stream_id or a key the earliest entry is kept. With a format, an empty result still has its columns.
    """
    days = partition_dates(root) if dates is None else [dt.date.fromisoformat(str(d)) for d in dates]
    paths = [p for day in days for p in sorted((Path(root) / f"date={day.isoformat()}").glob("part-*.parquet"))]
    tables = [pq.ParquetFile(p).read() for p in paths]
    keys = {(t.schema.metadata or {}).get(KEY_METADATA, b"").decode() for t in tables} - {""}
    if record_format is not None:
        keys = {record_format.key}
    if len(keys) > 1:
        raise ValueError(f"{root} mixes records keyed by {sorted(keys)}; pass the RecordFormat of the stream")
    if not tables:
        return record_format.table_schema().empty_table().to_pandas() if record_format else pd.DataFrame()
    frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    ids = [parse_stream_id(s) for s in frame["stream_id"]]
    frame = frame.assign(_ms=[i[0] for i in ids], _seq=[i[1] for i in ids]).sort_values(["_ms", "_seq"], kind="stable")
    unique = frame.drop_duplicates("stream_id")
    if keys:
        unique = unique.drop_duplicates(next(iter(keys)))
    if len(unique) < len(frame):
        log.info("%s: dropped %d duplicate rows of %d", root, len(frame) - len(unique), len(frame))
    return unique.drop(columns=["_ms", "_seq"]).reset_index(drop=True)
