"""Event time in Dagster: how late an event may arrive and still count (a resource), and the clock runs read."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from feature_repo.event_time import Lateness


class EventTimeResource(dg.ConfigurableResource):
    """Allowed lateness in whole days (the watermark trails each arrival day by this much)."""

    allowed_lateness_days: int = Lateness().allowed_days

    def lateness(self) -> Lateness:
        """The validated lateness policy."""
        return Lateness(self.allowed_lateness_days)


def clock_ts(now: str | None) -> float:
    """A run's clock as epoch seconds: the ISO-8601 instant its config gives (simulated time, e.g. the closed loop's
    day), else the wall clock. The same instant the decision service's clock shows (HYPERLIFT_SERVING_NOW and
    POST /v1/admin/clock), passed to the run that must agree with it."""
    if now is None:
        return dt.datetime.now(dt.UTC).timestamp()
    instant = dt.datetime.fromisoformat(now)
    if instant.tzinfo is None:
        raise ValueError(f"now must carry a UTC offset (e.g. 2026-11-03T00:00:00Z); got {now!r}")
    return instant.timestamp()
