"""Delayed outcomes (purchases, conversions) appended to a Redis Stream; the Dagster drain joins them to decisions.

An outcome sent with an idempotency key is stored once: its outcome_id is a keyed hash of the client and the key,
and one Lua call claims `{<stream>}:idempotency:<outcome_id>` (`claim_key`, for `ttl_s`) and appends the record, or
finds the claim of an earlier call and answers it as a duplicate. The claim's hash tag is the stream's name, so claim
and stream share a slot and the call runs on a Redis Cluster too (claims written before 2026-12-07 were named
`<stream>:idempotency:<outcome_id>`: a retry of one of those is stored again, and the lake still keeps it once). A retry after the claim expired is stored again, with the same
outcome_id, and the lake keeps one row per outcome_id: it is never counted twice. Without a key every call is a
new outcome (a client that retries must send one).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable

import redis

from serving.core.schemas import OutcomeAccepted, OutcomeRequest
from serving.decision.identity import issued_decision_id, outcome_id, user_key
from serving.ops.api_keys import ANONYMOUS

FUTURE_TOLERANCE_S = 300.0  # clock skew allowed between the caller and us

# KEYS: claim, stream; ARGV: fingerprint, ttl_s, record. 1 when stored; else the fingerprint of the earlier call.
# The claim is undone when the append fails, so a retry after a refused append is stored.
CLAIM_AND_APPEND = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  local appended = redis.pcall('XADD', KEYS[2], '*', 'record', ARGV[3])
  if type(appended) == 'table' and appended.err then
    redis.call('DEL', KEYS[1])
    return appended
  end
  return 1
end
return redis.call('GET', KEYS[1])
"""


def claim_key(stream: str, outcome_id: str) -> str:
    """The idempotency claim of one outcome id, on the stream's slot (the stream's name as hash tag)."""
    return f"{{{stream}}}:idempotency:{outcome_id}"


class OutcomeRejected(ValueError):
    """The outcome cannot be stored as sent (e.g. its time is in the future)."""


class OutcomeLog:
    """Writes outcome records (`outcome_id, ts, user_key, decision_id, kind, revenue`) to `stream`."""

    def __init__(
        self, client: redis.Redis, stream: str, salt: str, clock: Callable[[], float] = time.time,
        ttl_s: int = 7 * 86_400,
    ):
        self.client = client
        self.stream = stream
        self.salt = salt
        self.clock = clock  # the service's clock (epoch seconds): a simulated day's outcomes are not "in the future"
        self.ttl_s = ttl_s
        self._claim_and_append = client.register_script(CLAIM_AND_APPEND)

    def record(
        self, outcome: OutcomeRequest, now: float | None = None, idempotency_key: str | None = None,
        client: str = ANONYMOUS,
    ) -> OutcomeAccepted:
        """Validate and append one outcome, once per (client, idempotency key) when a key is given; raises
        OutcomeRejected, or redis.RedisError when Redis cannot take it."""
        key = self._idempotency_key(outcome, idempotency_key)
        if outcome.decision_id is not None and not issued_decision_id(outcome.decision_id, self.salt):
            raise OutcomeRejected(f"decision_id {outcome.decision_id} was not issued by this service: send the "
                                  "decision_id of a decision it answered")
        now = self.clock() if now is None else now
        ts = outcome.ts if outcome.ts is not None else now
        if ts > now + FUTURE_TOLERANCE_S:
            raise OutcomeRejected(f"ts {ts} is {ts - now:.0f} s in the future; send the time the outcome happened")
        oid = outcome_id(client, key, self.salt) if key is not None else uuid.uuid4().hex
        record = {
            "outcome_id": oid,
            "ts": ts,
            "user_key": user_key(outcome.user_id, self.salt) if outcome.user_id is not None else None,
            "decision_id": outcome.decision_id,
            "kind": outcome.kind,
            "revenue": outcome.revenue,
        }
        duplicate = False
        if key is None:
            self.client.xadd(self.stream, {"record": json.dumps(record)})
        else:
            duplicate = self._append_once(record, _fingerprint(outcome))
        return OutcomeAccepted(
            outcome_id=oid,
            attributed_by="decision_id" if outcome.decision_id else "user_and_time",
            duplicate=duplicate,
        )

    def _append_once(self, record: dict[str, object], fingerprint: str) -> bool:
        """Append `record` unless its outcome_id is claimed; True when it was (a duplicate of the same outcome)."""
        claim = claim_key(self.stream, str(record["outcome_id"]))
        stored = self._claim_and_append(keys=[claim, self.stream], args=[fingerprint, self.ttl_s, json.dumps(record)])
        if stored == 1:
            return False
        if (stored.decode() if isinstance(stored, bytes) else stored) != fingerprint:
            raise OutcomeRejected("this idempotency key was used for a different outcome: send a new key for a new "
                                  "outcome, the same body for a retry")
        return True

    @staticmethod
    def _idempotency_key(outcome: OutcomeRequest, header: str | None) -> str | None:
        """The key of the Idempotency-Key header or of the body's idempotency_key; both sent must agree."""
        if header is not None and outcome.idempotency_key is not None and header != outcome.idempotency_key:
            raise OutcomeRejected("the Idempotency-Key header and the body's idempotency_key differ: send one, or the "
                                  "same in both")
        return header if header is not None else outcome.idempotency_key


def _fingerprint(outcome: OutcomeRequest) -> str:
    """The outcome as sent (without its idempotency key), hashed: a retry must send the same."""
    sent = outcome.model_dump(exclude={"idempotency_key"})
    return hashlib.sha256(json.dumps(sent, sort_keys=True).encode()).hexdigest()[:32]
