"""Delayed outcomes (purchases, conversions) appended to a Redis Stream; the Dagster drain joins them to decisions."""

from __future__ import annotations

import json
import time
import uuid

import redis

from serving.identity import user_key
from serving.schemas import OutcomeAccepted, OutcomeRequest

FUTURE_TOLERANCE_S = 300.0  # clock skew allowed between the caller and us


class OutcomeRejected(ValueError):
    """The outcome cannot be stored as sent (e.g. its time is in the future)."""


class OutcomeLog:
    """Writes outcome records (`outcome_id, ts, user_key, decision_id, kind, revenue`) to `stream`."""

    def __init__(self, client: redis.Redis, stream: str, salt: str):
        self.client = client
        self.stream = stream
        self.salt = salt

    def record(self, outcome: OutcomeRequest, now: float | None = None) -> OutcomeAccepted:
        """Validate and append one outcome; raises OutcomeRejected, or redis.RedisError when Redis cannot take it."""
        now = time.time() if now is None else now
        ts = outcome.ts if outcome.ts is not None else now
        if ts > now + FUTURE_TOLERANCE_S:
            raise OutcomeRejected(f"ts {ts} is {ts - now:.0f} s in the future; send the time the outcome happened")
        record = {
            "outcome_id": uuid.uuid4().hex,
            "ts": ts,
            "user_key": user_key(outcome.user_id, self.salt) if outcome.user_id is not None else None,
            "decision_id": outcome.decision_id,
            "kind": outcome.kind,
            "revenue": outcome.revenue,
        }
        self.client.xadd(self.stream, {"record": json.dumps(record)})
        return OutcomeAccepted(
            outcome_id=record["outcome_id"],
            attributed_by="decision_id" if outcome.decision_id else "user_and_time",
        )
