"""Event intake of the decision service: `POST /v1/events` batches through the streaming path, counted.

The work is `feature_repo.stream.StreamUpdater` (the batch contracts and transforms, exactly once, into Feast's
online store); this module adds what the service needs around it: a bounded batch, metrics, and the answer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram

from feature_repo.stream import StreamResult, StreamUpdater

DUPLICATE = "event_id.unique"
APPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Seconds: a call of a hundred events takes tens of milliseconds; the freshness target is one second."""


class EventIntake:
    """Applies event batches and counts what happened to them."""

    def __init__(self, updater: StreamUpdater, registry: CollectorRegistry):
        self.updater = updater
        self.accepted = Counter("hyperlift_events_accepted", "Events applied to the online features.", registry=registry)
        self.rejected = Counter(
            "hyperlift_events_rejected", "Events refused (kept in the quarantine stream), by rule.", ["rule"],
            registry=registry,
        )
        self.failed = Counter(
            "hyperlift_event_batches_failed", "Calls not applied because Redis failed (the client retries).",
            registry=registry,
        )
        self.seconds = Histogram(
            "hyperlift_event_apply_seconds", "Time from receiving a batch to its rows being online.",
            buckets=APPLY_BUCKETS, registry=registry,
        )

    def apply(self, events: Sequence[dict]) -> StreamResult:
        """Apply a batch; Redis errors propagate (counted) so the caller can answer 503."""
        started = time.perf_counter()
        try:
            result = self.updater.apply(events)
        except redis.exceptions.RedisError:
            self.failed.inc()
            raise
        self.seconds.observe(time.perf_counter() - started)
        self.accepted.inc(result.accepted)
        for rule, n in result.rule_counts().items():
            self.rejected.labels(rule).inc(n)
        return result

    @staticmethod
    def only_replays(result: StreamResult) -> bool:
        """Nothing new, and nothing wrong either: every refused event was already applied (a client's retry)."""
        return all(r["rule"] == DUPLICATE for r in result.rejected)
