"""Consent as events: the newest consent event per user and purpose, kept in Redis and read with every decision.

Two producers write consent events:

- `POST /v1/consent` (serving/api/routes/consent.py): a grant or a revocation at its event time, stored here;
- the CRM snapshot: the profile row of `user_profile_fv` (`consent_marketing`, ...), stamped at the time the CRM
  recorded the consent (the sign-up), is a consent event of that time.

Whichever event is later by event time wins, whatever path it came through; at the same instant a revocation wins.
So a revocation through the API is not undone by the next materialization of an older CRM snapshot (its rows keep
their old stamp), and a consent the CRM records later than an API call (a new profile row, stamped then) wins over
it. The decision reads the user's consent entry in the same round trip as the features (one HMGET more), applies
it to the read before any rule looks at it (`ConsentReader`), and logs the value it used.

A revocation is in effect for the next decision of every worker as soon as the call returns (it is a Redis write,
not a batch). The last-known-good feature cache (used while the online store fails) is told of every revocation:
at once in the worker that took the call, and through `ConsentWatcher` (which follows the audit stream) in the
others; a cached read of the user from before the revocation is then never served.

Keys: `hyperlift:consent:{<user_id>}`, where the id is the user's pseudonym (as every feature row's: the routes map
the raw id at the edge, feature_repo/pseudonyms.py), a hash of purpose (the consent feature's name) →
`"<0|1> <ts ms> <source>"`; the user's hash tag keeps the entry on the user's slot. Every call (applied or not) is
appended to the audit stream `hyperlift:consent_events` with the API key that made it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
import redis

from serving.ops.redaction import redis_failure
from serving.store.features import FeatureRead

log = logging.getLogger(__name__)

CONSENT_PREFIX = "hyperlift:consent"
CONSENT_STREAM = "hyperlift:consent_events"
CONSENT_STREAM_MAXLEN = 1_000_000  # approximate; the audit trail is drained to the lake long before

# A newer event replaces the entry; an older one, or one of the same instant that would grant what a revocation of
# that instant took (or repeats the entry), leaves it. Returns {applied 0/1, the entry in effect}.
_APPLY = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local granted, stamp = string.match(current, '^(%d) (%d+)')
  stamp = tonumber(stamp)
  local new = tonumber(ARGV[3])
  if stamp > new or (stamp == new and (granted == '0' or granted == ARGV[2])) then
    return {0, current}
  end
end
local entry = ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4]
redis.call('HSET', KEYS[1], ARGV[1], entry)
return {1, entry}
"""


@dataclass(frozen=True)
class ConsentEntry:
    """The consent in effect for one purpose: granted or not, since when (epoch seconds), from which producer."""

    granted: bool
    ts: float
    source: str

    @classmethod
    def parse(cls, raw: bytes | str) -> "ConsentEntry":
        text = raw.decode() if isinstance(raw, bytes) else raw
        granted, stamp_ms, source = text.split(" ", 2)
        return cls(granted == "1", int(stamp_ms) / 1000.0, source)


@dataclass(frozen=True)
class ConsentResult:
    """What a consent call did: `applied` False when a later event (or a revocation of the same instant) stands."""

    event_id: str
    applied: bool
    in_effect: ConsentEntry


class ConsentStore:
    """Writes consent events (newest by event time wins) and queues their reads on a decision's round trip."""

    def __init__(
        self, client: redis.Redis, purposes: Collection[str], stream: str = CONSENT_STREAM,
        prefix: str = CONSENT_PREFIX, stream_maxlen: int = CONSENT_STREAM_MAXLEN,
    ):
        if not purposes:
            raise ValueError("a consent store needs at least one purpose (a consent feature of the region bundles)")
        self.client = client
        self.purposes = tuple(sorted(purposes))
        self.stream = stream
        self.prefix = prefix
        self.stream_maxlen = stream_maxlen
        self._apply = client.register_script(_APPLY)

    def key(self, user_id: int) -> str:
        """The user's consent hash; `{user_id}` is the hash tag that keeps it on the user's Redis Cluster slot."""
        return f"{self.prefix}:{{{int(user_id)}}}"

    def record(
        self, user_id: int, purpose: str, granted: bool, ts: float, source: str = "api", client_id: str = "",
        event_id: str | None = None, user_key: str = "", received: float | None = None,
    ) -> ConsentResult:
        """Apply one consent event (if it is the newest for the purpose) and append it to the audit stream.

        The audit record (`record`, JSON; lake format `CONSENT_FORMAT`) also carries the user's keyed hash (`user_key`,
        what the decision log knows the user by) and `received`, the service's clock when it took the call: from then
        on no decision may serve the user an action that needs the purpose (the decision log's check).
        Raises ValueError for a purpose no region bundle uses, RedisError when Redis fails (nothing is lost by
        retrying: the same event applies once and its replay leaves the entry as it is)."""
        if purpose not in self.purposes:
            raise ValueError(f"unknown consent purpose {purpose!r}; the region bundles use {list(self.purposes)}")
        if " " in source or not source:
            raise ValueError(f"a consent source is one word, got {source!r}")
        event_id = event_id or uuid.uuid4().hex
        stamp_ms = int(round(ts * 1000.0))
        applied, entry = self._apply(keys=[self.key(user_id)], args=[purpose, int(bool(granted)), stamp_ms, source])
        result = ConsentResult(event_id, bool(applied), ConsentEntry.parse(entry))
        record = {
            "event_id": event_id, "ts": stamp_ms / 1000.0, "user_id": int(user_id), "user_key": user_key,
            "purpose": purpose, "granted": bool(granted), "source": source, "client": client_id,
            "applied": result.applied, "received": time.time() if received is None else received,
        }
        self.client.xadd(self.stream, {"record": json.dumps(record)}, maxlen=self.stream_maxlen, approximate=True)
        return result

    def entries(self, user_id: int) -> dict[str, ConsentEntry]:
        """The user's consent entries by purpose (only the purposes with one)."""
        return self.reader(self.client.hmget(self.key(user_id), list(self.purposes)))

    def reader(self, reply: Sequence[bytes | None]) -> dict[str, ConsentEntry]:
        """An HMGET reply of `self.purposes` as entries."""
        return {p: ConsentEntry.parse(raw) for p, raw in zip(self.purposes, reply) if raw}

    def queue(self, pipe, user_id: int, order: Sequence[str]) -> Callable[[list, FeatureRead], FeatureRead]:
        """Queue the HMGET of the user's consent on `pipe` (the decision's round trip); the returned function applies
        the entries to the read of that round trip (`apply`)."""
        position = len(pipe.command_stack)
        pipe.hmget(self.key(user_id), list(self.purposes))
        return lambda replies, read: apply(read, self.reader(replies[position]), order)


def _profile_view(read: FeatureRead, purpose: str) -> str | None:
    return next((view for view, row in read.by_view.items() if purpose in row), None)


def _with_values(read: FeatureRead, values: dict[str, float | None], order: Sequence[str]) -> FeatureRead:
    """`read` with the named features replaced (in by_name, by_view and, where the model reads them, in values)."""
    by_name = {**read.by_name, **values}
    by_view = {
        view: ({**row, **{p: v for p, v in values.items() if p in row}} if any(p in row for p in values) else row)
        for view, row in read.by_view.items()
    }
    array = read.values
    positions = [(order.index(p), v) for p, v in values.items() if p in order]
    if positions:
        array = array.copy()
        for i, v in positions:
            array[i] = np.nan if v is None else v
    return dataclasses.replace(read, values=array, by_name=by_name, by_view=by_view)


def apply(read: FeatureRead, entries: dict[str, ConsentEntry], order: Sequence[str] = ()) -> FeatureRead:
    """The read with each purpose's consent as the later of its two events: the stored entry, or the profile row
    (stamped when the CRM recorded it). At the same instant a revocation wins."""
    chosen: dict[str, float | None] = {}
    for purpose, entry in entries.items():
        view = _profile_view(read, purpose)
        profile_value = read.by_name.get(purpose)
        profile_stamp = read.event_timestamps.get(view) if view is not None else None
        if profile_value is None or profile_stamp is None:
            later = True
        else:
            profile_ts = profile_stamp.timestamp()
            later = entry.ts > profile_ts or (entry.ts == profile_ts and not entry.granted)
        if later and profile_value != float(entry.granted):
            chosen[purpose] = float(entry.granted)
    return _with_values(read, chosen, order) if chosen else read


class ConsentWatcher:
    """A thread that follows the audit stream and tells the last-known-good cache of every revocation, so a worker
    that serves cached features while Redis is down does not serve a grant revoked through another worker.

    It blocks on XREAD (its own connection, `block_s` at a time) from the stream's end at start; on a Redis error it
    waits `retry_s` and reads on from where it was. Revocations recorded within one read's latency before an outage
    can be missed (docs/security.md: Consent)."""

    def __init__(self, client: redis.Redis, stream: str, revoke: Callable[[int], None], block_s: float = 1.0,
                 retry_s: float = 1.0):
        self.client = client
        self.stream = stream
        self.revoke = revoke
        self.block_ms = int(block_s * 1000)
        self.retry_s = retry_s
        self.seen = 0  # revocations passed on
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = "$"

    def start(self) -> None:
        try:
            last = self.client.xrevrange(self.stream, count=1)
            self._last = last[0][0].decode() if last else "0-0"
        except redis.exceptions.RedisError as exc:
            log.warning("consent watcher: could not read the stream's end (%s); following from new entries",
                        redis_failure(exc))
        self._thread = threading.Thread(target=self._run, name="consent-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.block_ms / 1000.0 + 2.0)

    def poll(self) -> int:
        """Read what is new (blocking up to block_s); pass each applied revocation on; returns how many."""
        replies = self.client.xread({self.stream: self._last}, count=1000, block=self.block_ms)
        passed = 0
        for _, entries in replies or []:
            for entry_id, fields in entries:
                self._last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                try:
                    record = json.loads(fields[b"record"])
                    revoked = record["applied"] and not record["granted"]
                    user = int(record["user_id"])
                except (KeyError, TypeError, ValueError) as exc:  # not ours: say so, never stop following
                    log.warning("consent watcher: entry %s is not a consent record (%s)", self._last, exc)
                    continue
                if revoked:
                    self.revoke(user)
                    passed += 1
        self.seen += passed
        return passed

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except redis.exceptions.RedisError as exc:
                log.warning("consent watcher: %s; retrying in %.0f s", redis_failure(exc), self.retry_s)
                self._stop.wait(self.retry_s)
