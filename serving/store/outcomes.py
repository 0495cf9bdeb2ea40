"""Delayed outcomes (purchases, conversions) appended to a Redis Stream; the Dagster drain joins them to decisions."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import redis

from serving.decision.identity import user_key
from serving.core.schemas import OutcomeAccepted, OutcomeRequest

FUTURE_TOLERANCE_S = 300.0  # clock skew allowed between the caller and us


class OutcomeRejected(ValueError):
    """The outcome cannot be stored as sent (e.g. its time is in the future)."""


class OutcomeLog:
    """Writes outcome records (`outcome_id, ts, user_key, decision_id, kind, revenue`) to `stream`."""

    def __init__(self, client: redis.Redis, stream: str, salt: str, clock: Callable[[], float] = time.time):
        self.client = client
        self.stream = stream
        self.salt = salt
        self.clock = clock  # the service's clock (epoch seconds): a simulated day's outcomes are not "in the future"

    def record(self, outcome: OutcomeRequest, now: float | None = None) -> OutcomeAccepted:
        """Validate and append one outcome; raises OutcomeRejected, or redis.RedisError when Redis cannot take it."""
        now = self.clock() if now is None else now
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
