"""The service's clock for feature freshness: the wall clock (UTC), or a fixed instant for simulation and replay.

The simulated shop is stamped in its own period (e.g. October 2026) while the wall clock runs on; judged by the
wall clock every replayed feature row would be stale. `HYPERLIFT_SERVING_NOW` pins "now" to the end of the shop.
"""

from __future__ import annotations

from datetime import datetime, timezone


class Clock:
    """`now()` is the fixed instant when one is given, else the wall clock; always timezone-aware UTC."""

    def __init__(self, fixed: datetime | None = None):
        if fixed is not None and fixed.tzinfo is None:
            raise ValueError(
                f"the serving clock needs a timezone-aware instant (e.g. 2026-10-31T00:00:00+00:00), got {fixed!r}"
            )
        self.fixed = None if fixed is None else fixed.astimezone(timezone.utc)

    def now(self) -> datetime:
        """The current instant, UTC."""
        return self.fixed if self.fixed is not None else datetime.now(timezone.utc)

    def describe(self) -> str:
        """'wall clock' or the fixed instant in ISO-8601 (for /healthz)."""
        return "wall clock" if self.fixed is None else self.fixed.isoformat()
