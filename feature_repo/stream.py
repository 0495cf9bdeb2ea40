"""The streaming path: events → the batch contracts → exactly-once tiles in Redis → the batch transform → Feast's
online store, all before the call returns.

One definition of every step is shared with the batch assets: the contracts (evaluated event by event by
`validate_records`, which a property test holds equal to the batch's `validate_events`: contracts, future,
watermark), `event_contributions` (what an event adds to its tile) and `snapshots_from_tiles` (the features). What
differs is where the tiles live: per user, a Redis hash `hyperlift:tiles:{<user>}` with fields `<day>:<tile column>`.

- **Exactly once.** Each accepted event runs one Lua script that claims `hyperlift:seen:{<user>}:<event_id>` with
  SET NX (kept `seen_ttl_s`, longer than the watermark: a copy arriving later than that is behind the watermark
  anyway) and only then adds its contribution: HINCRBY for the sums, a compare for the latest times. A replay is
  `event_id.unique`. Integer tiles make arrival order irrelevant, so the features equal the batch's.
- **Watermark.** The arrival day is the day of `now`; events older than its start − allowed lateness are
  `ts.beyond_watermark`, events later than `now` + 5 minutes `ts.not_future` — the batch rules, per arrival day.
- **The online row.** After the events of a call are applied, each touched user's row is recomputed from all
  its tiles as of `max(now, latest event + 1 µs)` and written with `OnlineWriter` in `newer_or_equal` mode, so a
  late event (which does not move the latest time) still rewrites the row, and an older row never replaces a
  newer one.
- **Quarantine.** Rejected events go to the stream `hyperlift:quarantine` as received, with rule and reason
  (drained into the lake by the `stream_quarantine` asset), and are returned to the caller.

Concurrency: the tiles are updated atomically per event; two calls for one user may write their rows in either
order when their stamps are equal, and the next event of that user rewrites the row from the complete tiles.
Within one process, calls are serialised per user to avoid that window.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
import redis

from feature_repo.event_time import Lateness, day_start
from feature_repo.online_writer import OnlineWriter
from feature_repo.record_validation import validate_records
from feature_repo.transforms import TILE_COLUMNS, TILE_MAXES, TILE_SUMS, event_contributions, snapshots_from_tiles

TILES_PREFIX = "hyperlift:tiles:"
SEEN_PREFIX = "hyperlift:seen:"
QUARANTINE_STREAM = "hyperlift:quarantine"
MAX_TS = "max_ts_us"  # the latest event time of the user (any event type): the floor of the row's stamp
ACTIVITY_VIEW = "user_activity_fv"
_TILE_INDEX = {c: i for i, c in enumerate(TILE_COLUMNS)}
_EMPTY_TILE = np.array([0 if c in TILE_SUMS or c in ("user_id", "day") else -1 for c in TILE_COLUMNS], dtype=np.int64)
POSITION = "_position"  # the event's index in the call, carried through validation

# KEYS: seen key, tiles key. ARGV: seen ttl (s), day, event ts (µs), then len(TILE_SUMS) increments, then
# len(TILE_MAXES) candidate maxima (-1: none). Returns 1 when the event was applied, 0 for a replay.
_APPLY = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
local day, n_sums = ARGV[2], %(n_sums)d
for i = 1, n_sums do
  local inc = ARGV[3 + i]
  if inc ~= '0' then redis.call('HINCRBY', KEYS[2], day .. ':' .. FIELDS[i], inc) end
end
for j = 1, #MAXES do
  local v = tonumber(ARGV[3 + n_sums + j])
  if v >= 0 then
    local f = day .. ':' .. MAXES[j]
    local cur = tonumber(redis.call('HGET', KEYS[2], f) or '-1')
    if v > cur then redis.call('HSET', KEYS[2], f, ARGV[3 + n_sums + j]) end
  end
end
local cur = tonumber(redis.call('HGET', KEYS[2], '%(max_ts)s') or '-1')
if tonumber(ARGV[3]) > cur then redis.call('HSET', KEYS[2], '%(max_ts)s', ARGV[3]) end
return 1
"""
APPLY_LUA = (
    "local FIELDS = {" + ",".join(f"'{c}'" for c in TILE_SUMS) + "}\n"
    "local MAXES = {" + ",".join(f"'{c}'" for c in TILE_MAXES) + "}\n"
    + _APPLY % {"n_sums": len(TILE_SUMS), "max_ts": MAX_TS}
)


def tiles_key(user_id: int) -> str:
    """The user's tile hash; the braces keep a user's keys in one Redis Cluster slot."""
    return f"{TILES_PREFIX}{{{int(user_id)}}}"


def seen_key(user_id: int, event_id: str) -> str:
    """The marker that an event of this user was applied."""
    return f"{SEEN_PREFIX}{{{int(user_id)}}}:{event_id}"


@dataclass
class StreamResult:
    """What one call did: accepted events, rejected ones (index in the call, event_id, rule, reason), rows written."""

    accepted: int
    rejected: list[dict] = field(default_factory=list)
    users_updated: int = 0
    rows_written: int = 0

    def rule_counts(self) -> dict[str, int]:
        """Rejected events per rule."""
        counts: dict[str, int] = {}
        for row in self.rejected:
            counts[row["rule"]] = counts.get(row["rule"], 0) + 1
        return dict(sorted(counts.items()))


def parse_tiles(user_id: int, fields: dict[bytes, bytes]) -> tuple[np.ndarray, int]:
    """A user's tile hash as rows of `TILE_COLUMNS` (one per day, ascending) and its latest event time in µs."""
    days: dict[int, np.ndarray] = {}
    latest = -1
    for raw_name, raw_value in fields.items():
        name = raw_name.decode()
        if name == MAX_TS:
            latest = int(raw_value)
            continue
        day, column = name.split(":", 1)
        row = days.get(int(day))
        if row is None:
            row = days[int(day)] = _EMPTY_TILE.copy()
            row[0], row[1] = int(user_id), int(day)
        row[_TILE_INDEX[column]] = int(raw_value)
    rows = np.stack([days[d] for d in sorted(days)]) if days else np.empty((0, len(TILE_COLUMNS)), dtype=np.int64)
    return rows, latest


def tiles_frame(rows: list[np.ndarray]) -> pd.DataFrame:
    """Stacked `parse_tiles` rows as a tiles frame."""
    data = np.concatenate(rows) if rows else np.empty((0, len(TILE_COLUMNS)), dtype=np.int64)
    return pd.DataFrame(data, columns=list(TILE_COLUMNS))


def write_tiles(client: redis.Redis, tiles: pd.DataFrame, chunk_users: int = 500) -> int:
    """Replace the Redis tiles of every user in `tiles` (the batch's), so the stream continues from the batch state.

    Only non-empty fields are stored (absent sums read as 0, absent maxima as none). Returns the users written.
    """
    if tiles.empty:
        return 0
    sums, maxes = tiles[list(TILE_SUMS)].to_numpy(), tiles[list(TILE_MAXES)].to_numpy()
    users, days = tiles["user_id"].to_numpy(), tiles["day"].to_numpy()
    bounds = np.flatnonzero(np.diff(users)) + 1  # tiles are sorted by (user, day): one block per user
    blocks = np.split(np.arange(len(tiles)), bounds)
    for start in range(0, len(blocks), chunk_users):
        pipe = client.pipeline(transaction=False)
        for block in blocks[start:start + chunk_users]:
            mapping: dict[str, int] = {}
            for i in block:
                prefix = f"{int(days[i])}:"
                mapping.update({prefix + c: int(v) for c, v in zip(TILE_SUMS, sums[i]) if v})
                mapping.update({prefix + c: int(v) for c, v in zip(TILE_MAXES, maxes[i]) if v >= 0})
            mapping[MAX_TS] = int(max(maxes[block].max(), -1))
            key = tiles_key(int(users[block[0]]))
            pipe.delete(key)
            pipe.hset(key, mapping=mapping)
        pipe.execute()
    return len(blocks)


def remember_events(client: redis.Redis, events: pd.DataFrame, ttl_s: int, chunk: int = 5_000) -> int:
    """Mark accepted batch events as applied, so a copy that reaches the stream later is a replay."""
    for start in range(0, len(events), chunk):
        pipe = client.pipeline(transaction=False)
        part = events.iloc[start:start + chunk]
        for user, event_id in zip(part["user_id"].astype(int), part["event_id"].astype(str)):
            pipe.set(seen_key(user, event_id), 1, ex=ttl_s)
        pipe.execute()
    return len(events)


def seen_ttl_s(lateness: Lateness) -> int:
    """How long an applied event's id is remembered: the watermark, plus the arrival day and clock skew."""
    return int((lateness.allowed_days + 2) * 86400)


class StreamUpdater:
    """Applies event batches to the online store through the batch contracts and transforms (see module doc)."""

    def __init__(
        self, writer: OnlineWriter, client: redis.Redis, lateness: Lateness, now: Callable[[], datetime],
        quarantine_maxlen: int = 1_000_000,
    ):
        self.writer = writer
        self.client = client
        self.lateness = lateness
        self.now = now
        self.seen_ttl_s = seen_ttl_s(lateness)
        self.quarantine_maxlen = quarantine_maxlen
        self._script = client.register_script(APPLY_LUA)
        self._view = writer.store.get_feature_view(ACTIVITY_VIEW)  # once: a registry lookup costs ~5 ms
        self._locks: dict[int, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def apply(self, events: Sequence[dict]) -> StreamResult:
        """Validate, apply exactly once and write the touched users' rows; raises redis errors to the caller."""
        now = pd.Timestamp(self.now()).tz_convert("UTC")
        records = [{**e, POSITION: i} for i, e in enumerate(events)]
        result = validate_records(
            records, as_of=now, not_before=self.lateness.watermark(day_start(now)), extra_columns=[POSITION]
        )
        rejected = [
            {"index": int(pos), "event_id": _text(eid), "rule": rule, "reason": reason}
            for pos, eid, rule, reason in result.quarantined[[POSITION, "event_id", "rule", "reason"]].itertuples(
                index=False
            )
        ]
        accepted = result.accepted
        applied = self._apply_tiles(accepted)
        if not applied.all():
            refused = set(result.quarantined[POSITION])
            position = {str(r.get("event_id")): r[POSITION] for r in reversed(records) if r[POSITION] not in refused}
            for event_id in accepted.loc[~applied, "event_id"]:
                rejected.append({"index": int(position[str(event_id)]), "event_id": str(event_id),
                                 "rule": "event_id.unique", "reason": "duplicate of an event accepted earlier"})
        users = sorted(set(accepted.loc[applied, "user_id"].astype(int)))
        rows_written = self._write_rows(users, now)
        self._quarantine(rejected, events, now)
        return StreamResult(int(applied.sum()), sorted(rejected, key=lambda r: r["index"]), len(users), rows_written)

    def refresh(self, users: Sequence[int], chunk: int = 2_000) -> int:
        """Recompute the users' rows from their tiles as of now and write them (newer or equal): what the nightly batch
        does for users without new events, so their rows roll forward (decays, recency) and stay fresh."""
        now = pd.Timestamp(self.now()).tz_convert("UTC")
        users = sorted({int(u) for u in users})
        return sum(self._write_rows(users[i:i + chunk], now) for i in range(0, len(users), chunk))

    def _apply_tiles(self, accepted: pd.DataFrame) -> np.ndarray:
        """Run the exactly-once script per accepted event, in one pipeline; True where the event was new."""
        if accepted.empty:
            return np.zeros(0, dtype=bool)
        parts = event_contributions(accepted)
        ts_us = pd.to_datetime(accepted["ts"], utc=True).dt.as_unit("us").astype("int64").to_numpy()
        sums, maxes = parts[list(TILE_SUMS)].to_numpy(), parts[list(TILE_MAXES)].to_numpy()
        pipe = self.client.pipeline(transaction=False)
        for i, (user, day, event_id) in enumerate(zip(parts["user_id"], parts["day"], accepted["event_id"])):
            self._script(
                keys=[seen_key(user, event_id), tiles_key(user)],
                args=[self.seen_ttl_s, int(day), int(ts_us[i]), *sums[i].tolist(), *maxes[i].tolist()],
                client=pipe,
            )
        return np.array([reply == 1 for reply in pipe.execute()], dtype=bool)

    def _write_rows(self, users: list[int], now: pd.Timestamp) -> int:
        """Recompute each touched user's row from all its tiles and write them, newer-or-equal, in one write."""
        if not users:
            return 0
        locks = [self._lock(user) for user in users]  # sorted users: a fixed lock order, no deadlock
        for lock in locks:  # close the window between reading a user's tiles and writing its row
            lock.acquire()
        try:
            pipe = self.client.pipeline(transaction=False)
            for user in users:
                pipe.hgetall(tiles_key(user))
            by_stamp: dict[pd.Timestamp, tuple[list[int], list[np.ndarray]]] = {}
            for user, fields in zip(users, pipe.execute()):
                tiles, latest = parse_tiles(user, fields)
                stamp = max(now, pd.Timestamp(latest + 1, unit="us", tz="UTC"))
                group = by_stamp.setdefault(stamp, ([], []))
                group[0].append(user)
                group[1].append(tiles)
            # Users sharing a stamp (nearly all: `now`) are computed together, in one call of the batch transform.
            rows = [
                snapshots_from_tiles(tiles_frame(tiles), np.array(group), pd.DatetimeIndex([stamp]))
                for stamp, (group, tiles) in by_stamp.items()
            ]
            return self.writer.write(self._view, pd.concat(rows, ignore_index=True), mode="newer_or_equal")
        finally:
            for lock in locks:
                lock.release()

    def _lock(self, user: int) -> threading.Lock:
        with self._locks_guard:
            lock = self._locks.get(user)
            if lock is None:
                if len(self._locks) > 100_000:  # bounded: forget idle users' locks
                    self._locks.clear()
                lock = self._locks[user] = threading.Lock()
            return lock

    def _quarantine(self, rejected: list[dict], events: Sequence[dict], now: pd.Timestamp) -> None:
        """Keep every rejected event, as received, with its rule and reason (never lost)."""
        if not rejected:
            return
        pipe = self.client.pipeline(transaction=False)
        received = now.timestamp()
        for row in rejected:
            # serving.store.decision_log.QUARANTINE_FORMAT: the stream drain writes it to the lake, then acknowledges.
            record = {"quarantine_id": uuid.uuid4().hex, "ts": received, "event_id": row["event_id"],
                      "rule": row["rule"], "reason": row["reason"], "event": events[row["index"]]}
            pipe.xadd(QUARANTINE_STREAM, {"record": json.dumps(record, default=str)},
                      maxlen=self.quarantine_maxlen, approximate=True)
        pipe.execute()


def _text(value: object) -> str | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA else str(value)
