"""A circuit breaker for calls to a dependency (the online store's Redis).

closed: calls go through; `failure_threshold` consecutive failures open it.
open: calls are refused (the caller answers with its fallback at once) for `cooldown_s`.
half-open: after the cooldown one trial call goes through; success closes the breaker, failure opens it again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    """Thread-safe; `clock` is injectable so tests need no sleeping."""

    def __init__(self, failure_threshold: int = 5, cooldown_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        if failure_threshold < 1 or cooldown_s <= 0:
            raise ValueError("failure_threshold must be >= 1 and cooldown_s > 0")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.state = CLOSED
        self.opened = 0  # how many times it opened (exposed at /metrics)
        self._failures = 0
        self._opened_at = 0.0
        self._trial_running = False
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """Whether a call may go to the dependency now (in half-open, only the one trial call may)."""
        with self._lock:
            if self.state == OPEN and self.clock() - self._opened_at >= self.cooldown_s:
                self.state, self._trial_running = HALF_OPEN, False
            if self.state == CLOSED:
                return True
            if self.state == HALF_OPEN and not self._trial_running:
                self._trial_running = True
                return True
            return False

    def record_success(self) -> None:
        """The call went through: close the breaker."""
        with self._lock:
            self.state, self._failures, self._trial_running = CLOSED, 0, False

    def record_failure(self) -> None:
        """The call failed: count it; open on the threshold, or at once when the half-open trial failed."""
        with self._lock:
            self._failures += 1
            if self.state == HALF_OPEN or self._failures >= self.failure_threshold:
                self.state, self._opened_at, self._trial_running = OPEN, self.clock(), False
                self.opened += 1
                self._failures = 0
