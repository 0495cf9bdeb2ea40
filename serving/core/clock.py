"""The service's one clock: what every time-dependent part of a decision reads.

Read by: feature freshness (`now()`), the decision trace's `ts`, frequency caps and budget pacing (`time()`), the
outcome intake's future check and the event intake's watermark. Two modes:

- **wall clock** (default): `now()` is the current UTC instant.
- **simulated**: time starts at a given instant (`HYPERLIFT_SERVING_NOW`) and stands still until it is moved
  forward with `advance_to` (`POST /v1/admin/clock`). A closed-loop simulation (or a replay) drives the service
  through its own days this way: caps count, budgets pace and traces are stamped in the simulated day, and freshness
  is judged against it. It never moves backwards: caps and budgets count forward in time, and a trace whose `ts`
  went back would land in an earlier partition than decisions already drained.

The simulated clock lives in the worker: run one worker per simulated service (`make loop` does).
"""

from __future__ import annotations

import threading
import time as _time
from datetime import datetime, timezone


class ClockError(ValueError):
    """A request the clock refuses: moving the wall clock, or moving a simulated clock backwards."""


class Clock:
    """`now()` (aware UTC datetime) and `time()` (epoch seconds) of the wall clock, or of a simulated instant."""

    def __init__(self, start: datetime | None = None):
        if start is not None and start.tzinfo is None:
            raise ValueError(
                f"the serving clock needs a timezone-aware instant (e.g. 2026-10-31T00:00:00+00:00), got {start!r}"
            )
        self.simulated = start is not None
        self._lock = threading.Lock()
        self._now = None if start is None else start.astimezone(timezone.utc)
        self._epoch = None if start is None else self._now.timestamp()
        if not self.simulated:
            self.time = _time.time  # the hot path reads the wall clock directly, without a method call in between

    @property
    def fixed(self) -> datetime | None:
        """The simulated instant, or None on the wall clock."""
        return self._now

    def now(self) -> datetime:
        """The current instant, UTC."""
        return self._now if self._now is not None else datetime.now(timezone.utc)

    def time(self) -> float:  # replaced by time.time on the wall clock (see __init__)
        """The current instant in seconds since the epoch."""
        return self._epoch  # type: ignore[return-value]

    def advance_to(self, instant: datetime) -> datetime:
        """Move a simulated clock forward to `instant` (or leave it where it is); returns the new now (UTC)."""
        if not self.simulated:
            raise ClockError(
                "the service runs on the wall clock; start it with HYPERLIFT_SERVING_NOW=<ISO-8601 instant> to drive "
                "its time"
            )
        if instant.tzinfo is None:
            raise ClockError(f"the clock needs a timezone-aware instant (e.g. 2026-11-01T06:00:00Z), got {instant!r}")
        instant = instant.astimezone(timezone.utc)
        with self._lock:
            if instant < self._now:
                raise ClockError(
                    f"the simulated clock only moves forward: it is {self._now.isoformat()}, asked for "
                    f"{instant.isoformat()}"
                )
            self._now, self._epoch = instant, instant.timestamp()
        return instant

    def describe(self) -> str:
        """'wall clock' or the simulated instant in ISO-8601 (for /healthz)."""
        return "wall clock" if self._now is None else self._now.isoformat()
