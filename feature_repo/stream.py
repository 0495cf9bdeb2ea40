"""The streaming path: events → the batch contracts → exactly-once tiles in Redis → the batch transform → Feast's
online store, all before the call returns.

One definition of every step is shared with the batch assets: the contracts (evaluated event by event by
`validate_records`, which a property test holds equal to the batch's `validate_events`: contracts, future,
watermark), `event_contributions` (what an event adds to its tile) and `snapshots_from_tiles` (the features). What
differs is where the tiles live: per user, a Redis hash `hyperlift:tiles:{<user>}` with fields `<day>:<tile column>`.
`<user>` is the user's pseudonym, as in the lake: the accepted events' raw ids are replaced at the door
(`feature_repo/pseudonyms.py`) before anything is written; refused events go to the quarantine stream as received.

A call runs in three steps, and a call that fails at any point (a 503) and is sent again ends in the state one clean
call would have left: the same tiles, rows, quarantine, seen markers and answer.

1. **Tiles, exactly once.** Each accepted event runs one Lua script that checks
   `hyperlift:seen:{<user>}:<event_id>` and, for a new event, adds its contribution (HINCRBY for the sums, a
   compare for the latest times) and sets the marker, in that one atomic step: an event is never marked seen
   without being applied, nor applied without being marked. Nothing in the script can fail after its first write
   (its only refusal, a full money sum, is decided before it writes), so Redis never keeps half of it. The marker
   holds the call's token (a digest of its events) until step 3: a repeat of the same call finds its own token
   and counts the event as accepted, without applying it again; any other call finds a replay (`event_id.unique`).
   Markers are kept `seen_ttl_s`, longer than the watermark: a copy arriving later than that is behind the
   watermark anyway. Integer tiles make arrival order irrelevant, so the features equal the batch's.
2. **The online rows.** Each user with an event accepted by this call (applied now, or by an unfinished earlier
   attempt of it) has its row recomputed from all its tiles as of `max(now, latest event + 1 µs)` and written with
   `OnlineWriter` in `newer_or_equal` mode, so a late event (which does not move the latest time) still rewrites
   the row, and an older row never replaces a newer one.
3. **Quarantine and finish**, in that order: rejected events go to the stream `hyperlift:quarantine` as received,
   with rule and reason (drained into the lake by the `stream_quarantine` asset), then the accepted events' markers
   become `1` ("applied and answered"). Until then a repeat is the same call, after it a replay. A refused event's
   `quarantine_id` is a digest of the call, its position and its rule, so a repeat after a failure between the two
   writes (or a whole resend) appends the same records again, and the lake keeps each once.

So `in = accepted + quarantined` holds for every answered call, however many attempts it took. The one fault this
cannot tell apart is a lost reply to step 3's marker write: the call was finished, and its repeat is answered as a
resend (replays), as a deliberate resend must be.

- **Watermark.** The arrival day is the day of `now`; events older than its start − allowed lateness are
  `ts.beyond_watermark`, events later than `now` + 5 minutes `ts.not_future` — the batch rules, per arrival day.
- **Money bounds.** The contracts cap a price or revenue at `contracts.MAX_MONEY` (10^12 micro-units); the
  script keeps each user's lifetime sum of each money tile (`total:<column>`) and refuses, as `price.capacity` or
  `revenue.capacity`, the event that would take it past 2^53 micro-units: every sum of a user's tiles (the
  features' cumulative sums included) then stays exact, far from int64's limit. Counts grow by one per event.
- **Bounded state.** After writing the rows, step 2 folds each read user's days older than the watermark − a margin
  (`TileFolding`, one day by default) into its running tile (`fold:*` fields, `feature_repo.tile_fold`), one atomic
  script per user; `refresh` (the nightly roll-forward) does the same for quiet users. A user's hash then holds the
  fold plus the days since the watermark − margin, whatever its history; the features are bit-identical to the
  unfolded tiles'. The apply script refuses an event for a folded day (`ts.beyond_watermark`, reachable only from a
  writer whose clock is more than the margin behind). Folds done and refused: `StreamUpdater.fold_stats`.

Concurrency: the tiles are updated atomically per event; two calls for one user may write their rows in either
order when their stamps are equal, and the next event of that user rewrites the row from the complete tiles.
Within one process, calls are serialised per user to avoid that window. On a Redis Cluster every script keeps to
one user's slot, and step 3's two writes are pipelines that redis-py splits by slot.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
import redis

from feature_repo.event_time import Lateness, day_start
from feature_repo.online_writer import OnlineWriter
from feature_repo.pseudonyms import lake_pseudonymizer, pseudonymize
from feature_repo.record_validation import validate_records
from feature_repo.tile_fold import (
    FOLD_DAY_FIELD, FOLD_LUA, FOLD_PREFIX, FoldStats, TileFolding, fold_fields, folds_frame, parse_fold, plan_folds,
    run_folds,
)
from feature_repo.transforms import (
    FOLD_DAY, MICROS, TILE_COLUMNS, TILE_MAXES, TILE_SUMS, US_PER_DAY, empty_folds, event_contributions, fold_tiles,
    snapshots_from_tiles,
)
from infra.keys import Pseudonymizer
from infra.redis_cluster import run_scripts

TILES_PREFIX = "hyperlift:tiles:"
SEEN_PREFIX = "hyperlift:seen:"
QUARANTINE_STREAM = "hyperlift:quarantine"
MAX_TS = "max_ts_us"  # the latest event time of the user (any event type): the floor of the row's stamp
ACTIVITY_VIEW = "user_activity_fv"
_TILE_INDEX = {c: i for i, c in enumerate(TILE_COLUMNS)}
_EMPTY_TILE = np.array([0 if c in TILE_SUMS or c in ("user_id", "day") else -1 for c in TILE_COLUMNS], dtype=np.int64)
POSITION = "_position"  # the event's index in the call, carried through validation

MONEY_TILES = {"viewed_price_micros": "price", "revenue_micros": "revenue"}
"""Tile sums of money, with the event field they come from: the sums whose growth per event is bounded only by
`contracts.MAX_MONEY`, so each has a lifetime total kept next to the tiles (`total:<column>`)."""
TOTAL_PREFIX = "total:"
MONEY_CAP = 2**53
"""Most micro-units a user's lifetime money sum may reach: exact in a Lua double (the script's arithmetic) and in
a float64 (the features), and 1,024 times below int64's limit."""
DONE = b"1"
"""A seen marker's value once the call that applied the event has finished (the batch pipeline's markers too)."""

# Replies of the apply script: the event was applied now; applied by an earlier attempt of this same call;
# a replay of an event a finished call applied; a replay of an event an unfinished other call applied (its row is
# rewritten, in case that call never finishes); a negative k: refused, the k-th money total would pass the cap;
# refused, the event's day is at or before the user's fold day (`feature_repo.tile_fold`).
APPLIED, SAME_CALL, REPLAY, REPLAY_UNFINISHED, FOLDED = 1, 2, 0, 3, 4

# KEYS: seen key, tiles key. ARGV: seen ttl (s), day, event ts (µs), call token, then len(TILE_SUMS) increments,
# then len(TILE_MAXES) candidate maxima (-1: none). Checks first, writes after: nothing below the first write can fail.
_APPLY = """
local state = redis.call('GET', KEYS[1])
if state then
  if state == ARGV[4] then return %(same_call)d end
  if state == '1' then return %(replay)d end
  return %(replay_unfinished)d
end
local day, n_sums = ARGV[2], %(n_sums)d
local folded = redis.call('HGET', KEYS[2], '%(fold_day)s')
if folded and tonumber(day) <= tonumber(folded) then return %(folded)d end
for k = 1, #MONEY do
  local inc = tonumber(ARGV[4 + MONEY[k]])
  if inc > 0 then
    local total = tonumber(redis.call('HGET', KEYS[2], TOTALS[k]) or '0')
    if total > %(cap)d - inc then return -k end
  end
end
for i = 1, n_sums do
  local inc = ARGV[4 + i]
  if inc ~= '0' then redis.call('HINCRBY', KEYS[2], day .. ':' .. FIELDS[i], inc) end
end
for k = 1, #MONEY do
  local inc = ARGV[4 + MONEY[k]]
  if inc ~= '0' then redis.call('HINCRBY', KEYS[2], TOTALS[k], inc) end
end
for j = 1, #MAXES do
  local v = tonumber(ARGV[4 + n_sums + j])
  if v >= 0 then
    local f = day .. ':' .. MAXES[j]
    local cur = tonumber(redis.call('HGET', KEYS[2], f) or '-1')
    if v > cur then redis.call('HSET', KEYS[2], f, ARGV[4 + n_sums + j]) end
  end
end
local cur = tonumber(redis.call('HGET', KEYS[2], '%(max_ts)s') or '-1')
if tonumber(ARGV[3]) > cur then redis.call('HSET', KEYS[2], '%(max_ts)s', ARGV[3]) end
redis.call('SET', KEYS[1], ARGV[4], 'EX', ARGV[1])
return %(applied)d
"""
APPLY_LUA = (
    "local FIELDS = {" + ",".join(f"'{c}'" for c in TILE_SUMS) + "}\n"
    "local MAXES = {" + ",".join(f"'{c}'" for c in TILE_MAXES) + "}\n"
    "local MONEY = {" + ",".join(str(TILE_SUMS.index(c) + 1) for c in MONEY_TILES) + "}\n"
    "local TOTALS = {" + ",".join(f"'{TOTAL_PREFIX}{c}'" for c in MONEY_TILES) + "}\n"
    + _APPLY % {"n_sums": len(TILE_SUMS), "max_ts": MAX_TS, "cap": MONEY_CAP, "applied": APPLIED,
                "same_call": SAME_CALL, "replay": REPLAY, "replay_unfinished": REPLAY_UNFINISHED,
                "fold_day": FOLD_DAY_FIELD, "folded": FOLDED}
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
    """A user's tile hash as rows of `TILE_COLUMNS` (one per day after its fold, ascending) and its latest event time
    in µs; the days folded into its running tile are read by `tile_fold.parse_fold`."""
    days: dict[int, np.ndarray] = {}
    latest = -1
    for raw_name, raw_value in fields.items():
        name = raw_name.decode()
        if name == MAX_TS:
            latest = int(raw_value)
            continue
        if name.startswith(TOTAL_PREFIX) or name.startswith(FOLD_PREFIX):  # the running tile: `parse_fold`
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


def read_tiles(client: redis.Redis, users: Sequence[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The users' tiles and running tiles as Redis holds them (a tiles frame and a folds frame): what features are
    computed from (`snapshots_from_tiles(tiles, users, stamps, folds)`), one HGETALL per user."""
    tiles, folds = [], []
    for user in users:
        fields = client.hgetall(tiles_key(int(user)))
        tiles.append(parse_tiles(int(user), fields)[0])
        fold = parse_fold(int(user), fields)
        if fold is not None:
            folds.append(fold)
    return tiles_frame(tiles), folds_frame(folds)


def write_tiles(
    client: redis.Redis, tiles: pd.DataFrame, chunk_users: int = 500, fold_through: int | None = None,
    folds: pd.DataFrame | None = None,
) -> int:
    """Replace the Redis tiles of every user in `tiles` or `folds` (the batch's), so the stream continues from the
    batch state.

    Only non-empty fields are stored (absent sums read as 0, absent maxima as none), with each user's lifetime money
    totals (`MONEY_TILES`, which the apply script bounds). The key is rewritten whole: with `fold_through` (a day,
    `TileFolding.through_day`) the days up to it are written as the user's running tile, else one field set per
    day (the next call or refresh folds them). `folds` are running tiles the batch already holds (the lake fold of
    the days retention deleted, `feature_repo.lake_fold`): written as each user's running tile, counted in the
    totals, and the days up to `fold_through` folded onto them. Returns the users written.
    """
    lake_folds = empty_folds() if folds is None else folds
    if tiles.empty and lake_folds.empty:
        return 0
    if fold_through is not None:
        tiles, lake_folds = fold_tiles(tiles, lake_folds, fold_through)
    fold_of = {int(f["user_id"]): f for f in lake_folds.to_dict("records")}
    sums, maxes = tiles[list(TILE_SUMS)].to_numpy(), tiles[list(TILE_MAXES)].to_numpy()
    users, days = tiles["user_id"].to_numpy(), tiles["day"].to_numpy()
    bounds = np.flatnonzero(np.diff(users)) + 1  # tiles are sorted by (user, day): one block per user
    blocks = {int(users[b[0]]): b for b in np.split(np.arange(len(tiles)), bounds) if len(b)}
    everyone = sorted(set(blocks) | set(fold_of))
    money = {column: tiles[column].to_numpy() for column in MONEY_TILES}
    for start in range(0, len(everyone), chunk_users):
        pipe = client.pipeline(transaction=False)
        for user in everyone[start:start + chunk_users]:
            block = blocks.get(user, np.empty(0, dtype=np.int64))
            fold = fold_of.get(user)
            mapping: dict[str, int | str] = {}
            for i in block:
                prefix = f"{int(days[i])}:"
                mapping.update({prefix + c: int(v) for c, v in zip(TILE_SUMS, sums[i]) if v})
                mapping.update({prefix + c: int(v) for c, v in zip(TILE_MAXES, maxes[i]) if v >= 0})
            latest = [int(maxes[block].max())] if len(block) else []
            latest += [int(fold[c]) for c in TILE_MAXES] if fold is not None else []
            mapping[MAX_TS] = max(latest, default=-1)
            for column in MONEY_TILES:
                mapping[TOTAL_PREFIX + column] = int(money[column][block].sum()) + (
                    int(fold[column]) if fold is not None else 0)
            if fold is not None:
                mapping.update(fold_fields(fold))
            key = tiles_key(user)
            pipe.delete(key)
            pipe.hset(key, mapping=mapping)
        pipe.execute()
    return len(everyone)


def fold_user_tiles(
    client: redis.Redis, users: Sequence[int], through_day: int, min_days: int = 1, stats: FoldStats | None = None,
) -> FoldStats:
    """Fold the users' tiles of days <= `through_day` into their running tiles in Redis, one atomic script per user
    (what `StreamUpdater` does on every call and refresh, callable on its own, e.g. after `write_tiles`). Pick
    `through_day` with `TileFolding.through_day(lateness.watermark(today))`: a later day could still change."""
    stats = stats if stats is not None else FoldStats()
    script = client.register_script(FOLD_LUA)
    users = [int(u) for u in users]
    pipe = client.pipeline(transaction=False)
    for user in users:
        pipe.hgetall(tiles_key(user))
    read = {user: (fields, parse_tiles(user, fields)[0], parse_fold(user, fields))
            for user, fields in zip(users, pipe.execute())}
    plans = plan_folds(read, through_day, min_days)
    run_folds(client, script, {tiles_key(user): args for user, args in plans.items()}, stats)
    return stats


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
        quarantine_maxlen: int = 1_000_000, folding: TileFolding | None = TileFolding(),
        pseudonymizer: Pseudonymizer | None = None,
    ):
        self.writer = writer
        # The door (feature_repo/pseudonyms.py): accepted events are keyed by the user's pseudonym from here on.
        self.pseudonymizer = pseudonymizer or lake_pseudonymizer()
        self.folding = folding  # None: never fold (each user's hash then grows by its active days)
        self.fold_stats = FoldStats()
        self._fold_script = client.register_script(FOLD_LUA)
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
        """Validate, apply exactly once and write the touched users' rows (the three steps of the module doc); raises
        redis errors to the caller, who may send the same events again: the repeat ends as one clean call would."""
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
        accepted = pseudonymize(result.accepted, self.pseudonymizer)  # quarantined events stay as received
        replies = self._apply_tiles(accepted, call_token(events))
        ours = (replies == APPLIED) | (replies == SAME_CALL)
        if not ours.all():
            refused = set(result.quarantined[POSITION])
            position = {str(r.get("event_id")): r[POSITION] for r in reversed(records) if r[POSITION] not in refused}
            for event_id, reply in zip(accepted.loc[~ours, "event_id"], replies[~ours]):
                rule, reason = _refusal(int(reply))
                rejected.append({"index": int(position[str(event_id)]), "event_id": str(event_id),
                                 "rule": rule, "reason": reason})
        rewrite = ours | (replies == REPLAY_UNFINISHED)
        users = sorted(set(accepted.loc[rewrite, "user_id"].astype(int)))
        rows_written = self._write_rows(users, now)
        self._finish(rejected, events, now, accepted.loc[ours])
        updated = len(set(accepted.loc[ours, "user_id"].astype(int)))
        return StreamResult(int(ours.sum()), sorted(rejected, key=lambda r: r["index"]), updated, rows_written)

    def refresh(self, users: Sequence[int], chunk: int = 2_000) -> int:
        """Recompute the rows of `users` (lake ids: pseudonyms) from their tiles as of now and write them (newer or
        equal): what the nightly batch does for users without new events, so their rows roll forward (decays,
        recency) and stay fresh. Each user's days behind the watermark − margin are folded on the way (`tile_fold`),
        so this nightly pass bounds them."""
        now = pd.Timestamp(self.now()).tz_convert("UTC")
        users = sorted({int(u) for u in users})
        return sum(self._write_rows(users[i:i + chunk], now) for i in range(0, len(users), chunk))

    def _apply_tiles(self, accepted: pd.DataFrame, token: str) -> np.ndarray:
        """Run the apply script per accepted event, pipelined (per master on a cluster); its reply per event
        (`APPLIED`, ...)."""
        if accepted.empty:
            return np.zeros(0, dtype=np.int64)
        parts = event_contributions(accepted)
        ts_us = pd.to_datetime(accepted["ts"], utc=True).dt.as_unit("us").astype("int64").to_numpy()
        sums, maxes = parts[list(TILE_SUMS)].to_numpy(), parts[list(TILE_MAXES)].to_numpy()
        calls = [
            ([seen_key(user, event_id), tiles_key(user)],
             [self.seen_ttl_s, int(day), int(ts_us[i]), token, *sums[i].tolist(), *maxes[i].tolist()])
            for i, (user, day, event_id) in enumerate(zip(parts["user_id"], parts["day"], accepted["event_id"]))
        ]
        return np.array(run_scripts(self.client, self._script, calls), dtype=np.int64)

    def _write_rows(self, users: list[int], now: pd.Timestamp) -> int:
        """Recompute each touched user's row from all its tiles and write them, newer-or-equal, in one write; then
        fold the users' days that can no longer change (`self.folding`)."""
        if not users:
            return 0
        locks = [self._lock(user) for user in users]  # sorted users: a fixed lock order, no deadlock
        for lock in locks:  # close the window between reading a user's tiles and writing its row
            lock.acquire()
        try:
            pipe = self.client.pipeline(transaction=False)
            for user in users:
                pipe.hgetall(tiles_key(user))
            by_stamp: dict[pd.Timestamp, tuple[list[int], list[np.ndarray], list[dict]]] = {}
            read: dict[int, tuple[dict, np.ndarray, dict | None]] = {}
            for user, fields in zip(users, pipe.execute()):
                tiles, latest = parse_tiles(user, fields)
                fold = parse_fold(user, fields)
                read[user] = (fields, tiles, fold)
                # A clock behind the fold still gets a stamp the fold can answer: its days are final anyway.
                floor = latest + 1 if fold is None else max(latest + 1, (fold[FOLD_DAY] + 1) * US_PER_DAY)
                stamp = max(now, pd.Timestamp(floor, unit="us", tz="UTC"))
                group = by_stamp.setdefault(stamp, ([], [], []))
                group[0].append(user)
                group[1].append(tiles)
                if fold is not None:
                    group[2].append(fold)
            # Users sharing a stamp (nearly all: `now`) are computed together, in one call of the batch transform.
            rows = [
                snapshots_from_tiles(tiles_frame(tiles), np.array(group), pd.DatetimeIndex([stamp]), folds_frame(folds))
                for stamp, (group, tiles, folds) in by_stamp.items()
            ]
            written = self.writer.write(self._view, pd.concat(rows, ignore_index=True), mode="newer_or_equal")
            if self.folding is not None:
                self._fold(read, now)
            return written
        finally:
            for lock in locks:
                lock.release()

    def _fold(self, read: dict[int, tuple[dict, np.ndarray, dict | None]], now: pd.Timestamp) -> int:
        """Fold the read users' days older than the watermark − margin, one atomic script each; the users folded."""
        through = self.folding.through_day(self.lateness.watermark(day_start(now)))
        plans = plan_folds(read, through, self.folding.min_days)
        return run_folds(self.client, self._fold_script, {tiles_key(u): args for u, args in plans.items()},
                         self.fold_stats)

    def _lock(self, user: int) -> threading.Lock:
        with self._locks_guard:
            lock = self._locks.get(user)
            if lock is None:
                if len(self._locks) > 100_000:  # bounded: forget idle users' locks
                    self._locks.clear()
                lock = self._locks[user] = threading.Lock()
            return lock

    def _finish(self, rejected: list[dict], events: Sequence[dict], now: pd.Timestamp, ours: pd.DataFrame) -> None:
        """Step 3: keep every rejected event, as received, with its rule and reason (never lost), then mark this
        call's accepted events answered. Two writes, in that order, so that it runs on a Redis Cluster too (the
        quarantine stream and the users' markers live on different slots, which no transaction spans): a failure
        between them leaves the markers unset, and the repeat quarantines the same events again under the same
        `quarantine_id` (a digest of the call, the event's position and the rule), which the lake keeps once."""
        if rejected:
            token = call_token(events)
            received = now.timestamp()
            pipe = self.client.pipeline(transaction=False)
            for row in rejected:
                # serving.store.decision_log.QUARANTINE_FORMAT: the stream drain writes it to the lake, then acknowledges.
                record = {"quarantine_id": quarantine_id(token, row["index"], row["rule"]), "ts": received,
                          "event_id": row["event_id"], "rule": row["rule"], "reason": row["reason"],
                          "event": events[row["index"]]}
                pipe.xadd(QUARANTINE_STREAM, {"record": json.dumps(record, default=str)},
                          maxlen=self.quarantine_maxlen, approximate=True)
            pipe.execute()
        if not ours.empty:
            pipe = self.client.pipeline(transaction=False)  # on a cluster, split by slot
            for user, event_id in zip(ours["user_id"].astype(int), ours["event_id"].astype(str)):
                pipe.set(seen_key(user, event_id), DONE, xx=True, keepttl=True)
            pipe.execute()


def quarantine_id(token: str, index: int, rule: str) -> str:
    """The id of one refused event of one call: the same for a repeat of the call (see `_finish`)."""
    return hashlib.blake2b(f"{token}:{index}:{rule}".encode(), digest_size=16).hexdigest()


def call_token(events: Sequence[dict]) -> str:
    """A digest of a call's events (key order aside): what a repeat of the call, and only it, carries again."""
    canonical = json.dumps(list(events), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


def _refusal(reply: int) -> tuple[str, str]:
    """The rule and reason of an accepted event the apply script did not take (a reply other than ours)."""
    if reply == FOLDED:
        return ("ts.beyond_watermark",
                "the event's day is already folded into the user's running tile (days older than the watermark − "
                "the fold margin can no longer change); this writer's clock is behind: the event is kept here, not "
                "applied")
    if reply < 0:
        column = list(MONEY_TILES)[-reply - 1]
        field_name = MONEY_TILES[column]
        return (f"{field_name}.capacity",
                f"the user's lifetime sum of {field_name} would pass {MONEY_CAP / MICROS:,.6f} ({MONEY_CAP} "
                "micro-units), the most its tiles sum exactly; the event is kept here, not applied")
    return "event_id.unique", "duplicate of an event accepted earlier"


def _text(value: object) -> str | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA else str(value)
