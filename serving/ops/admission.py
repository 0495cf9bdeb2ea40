"""Admission control: a bound on decisions in flight. Beyond it a request is answered at once from the neutral
action (`fallback="overloaded"`) instead of waiting in a queue that could grow without bound."""

from __future__ import annotations

import threading


class Admission:
    """A non-blocking counting gate: `try_enter` succeeds while fewer than `limit` are inside."""

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"the in-flight limit must be >= 1; got {limit}")
        self.limit = limit
        self._inside = 0
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet finished."""
        return self._inside

    def try_enter(self) -> bool:
        """Admit one request if there is room; never blocks."""
        with self._lock:
            if self._inside >= self.limit:
                return False
            self._inside += 1
            return True

    def leave(self) -> None:
        """Mark an admitted request finished."""
        with self._lock:
            if self._inside == 0:
                raise RuntimeError("leave() without a matching try_enter()")
            self._inside -= 1
