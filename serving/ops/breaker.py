"""A circuit breaker for calls to a dependency (the online store's Redis).

closed: calls go through; `failure_threshold` failures in a row open it, counted once per episode (below).
open: calls are refused (the caller answers with its fallback at once). While it is open a probe (a PING) runs on the
  event loop every `probe_interval_s` and closes the breaker as soon as Redis answers one; no live request is
  spent as the trial. Failures reported while open are not counted (they are calls admitted before it opened).
half-open: only when no probe can run (the breaker opened off the event loop, in a thread, or its loop is gone):
  after `cooldown_s` one trial call goes through; success closes the breaker, failure opens it again (a trial that
  reports neither within another cooldown is taken as lost, and the next call is the trial).

One episode counts once. When Redis stalls, every call in flight on the decisions' one connection fails together
(the first timeout fails the connection, and with it the round trips queued behind it); before, eight concurrent
timeouts of one 50 ms stall counted as eight failures and opened the breaker for a whole cooldown. Now `allow()`
stamps the call (a context variable: one per asyncio task, so per request) with the breaker's generation, which
moves on at each counted failure, at each opening and at each closing; a failure counts only if its call was
admitted in the current generation, i.e. after the last counted failure. The calls that were in flight together
when a failure was counted share its episode; a stall that outlasts it fails the calls admitted afterwards, which
count, so a sustained outage opens the breaker after `failure_threshold` rounds of the Redis timeout (5 × 50 ms by
default), a blip of one timeout never does. A failure reported with no stamp in its context (a caller that did
not ask `allow()` first) counts, as before.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Awaitable, Callable

import redis

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
REFUSED = -1  # the stamp of a call `allow()` refused: a failure reported in its context is not counted
PROBE_ERRORS = (redis.exceptions.RedisError, OSError, TimeoutError)  # a probe failing so means: still down

log = logging.getLogger(__name__)


class CircuitBreaker:
    """Thread-safe; `clock` is injectable so tests need no sleeping; `probe` (an async call that raises one of
    PROBE_ERRORS while the dependency is down) is what runs while open."""

    def __init__(
        self, failure_threshold: int = 5, cooldown_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
        probe: Callable[[], Awaitable[object]] | None = None, probe_interval_s: float = 0.25,
    ):
        if failure_threshold < 1 or cooldown_s <= 0 or probe_interval_s <= 0:
            raise ValueError("failure_threshold must be >= 1, cooldown_s and probe_interval_s > 0")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.probe = probe
        self.probe_interval_s = probe_interval_s
        self.state = CLOSED
        # Running counts (plain ints, exported at scrape time by serving.ops.metrics.BreakerCollector)
        self.opened = 0  # how many times it opened
        self.closed_by_probe = 0
        self.probes = {"answered": 0, "failed": 0}
        self.failures = {"counted": 0, "same_episode": 0, "while_open": 0}
        self._failures = 0  # counted failures in a row
        self._generation = 0
        self._stamp: contextvars.ContextVar[int | None] = contextvars.ContextVar(f"breaker_{id(self)}", default=None)
        self._opened_at = 0.0
        self._trial_running = False
        self._trial_at = 0.0
        self._probe_task: asyncio.Task | None = None
        self._lock = threading.Lock()

    @property
    def probing(self) -> bool:
        """Whether a probe task is alive (then it, not a trial call, decides when the breaker closes)."""
        task = self._probe_task
        return task is not None and not task.done() and not task.get_loop().is_closed()

    def allow(self) -> bool:
        """Whether a call may go to the dependency now (in half-open, only the one trial call may); stamps the
        caller's context with the generation its failure would count in."""
        with self._lock:
            now = self.clock() if self.state != CLOSED else 0.0
            if self.state == OPEN and not self.probing and now - self._opened_at >= self.cooldown_s:
                self.state, self._trial_running = HALF_OPEN, False
            # a trial that has not reported for a cooldown is taken as lost (its request failed on a bug): another
            if self.state == HALF_OPEN and (not self._trial_running or now - self._trial_at >= self.cooldown_s):
                self._trial_running, self._trial_at = True, now
            elif self.state != CLOSED:
                self._stamp.set(REFUSED)
                return False
            self._stamp.set(self._generation)
            return True

    def record_success(self) -> None:
        """The call went through: Redis answers, close the breaker."""
        with self._lock:
            if self.state != CLOSED:
                self._generation += 1  # calls admitted before it closed belong to the outage
            self.state, self._failures, self._trial_running = CLOSED, 0, False

    def record_failure(self) -> None:
        """The call failed: count it, unless it shares the episode of the last counted failure or the breaker is
        already open; open on the threshold, or at once when the half-open trial failed."""
        stamp = self._stamp.get()
        with self._lock:
            if self.state == OPEN or stamp == REFUSED:
                self.failures["while_open"] += 1
                return
            if stamp is not None and stamp != self._generation:
                self.failures["same_episode"] += 1
                return
            self.failures["counted"] += 1
            self._failures += 1
            self._generation += 1
            if self.state != HALF_OPEN and self._failures < self.failure_threshold:
                return
            self.state, self._opened_at, self._trial_running = OPEN, self.clock(), False
            self.opened += 1
            self._failures = 0
        probing = self._start_probe()
        log.warning("circuit breaker opened; %s", f"probing every {self.probe_interval_s:g} s" if probing
                    else f"a trial call after {self.cooldown_s:g} s")

    def close(self) -> None:
        """Stop probing (at shutdown: called on the probe's event loop)."""
        task, self._probe_task = self._probe_task, None
        if task is not None:
            task.cancel()

    def _start_probe(self) -> bool:
        """Probe on the running event loop, if there is one here (and no probe is alive yet); whether one runs."""
        if self.probe is None:
            return False
        if self.probing:
            return True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # opened in a thread: the cooldown and a trial call close it
            return False
        self._probe_task = loop.create_task(self._probe_until_closed(), name="circuit-breaker-probe")
        self._probe_task.add_done_callback(self._probe_ended)
        return True

    async def _probe_until_closed(self) -> None:
        """Every probe_interval_s while open: probe; the first answer closes the breaker."""
        probe = self.probe
        assert probe is not None  # _start_probe starts none without it
        while self.state == OPEN:
            await asyncio.sleep(self.probe_interval_s)
            if self.state != OPEN:  # a call admitted before the opening succeeded meanwhile
                return
            try:
                async with asyncio.timeout(self.cooldown_s):  # a probe that hangs is bounded whatever it is
                    await probe()
            except PROBE_ERRORS:
                self.probes["failed"] += 1
                continue
            self.probes["answered"] += 1
            with self._lock:
                if self.state != OPEN:
                    return
                self.state, self._failures, self._trial_running = CLOSED, 0, False
                self._generation += 1
                self.closed_by_probe += 1
            log.warning("circuit breaker closed: Redis answered the probe")

    @staticmethod
    def _probe_ended(task: asyncio.Task) -> None:
        """A probe that raised what it should not (a bug) is logged; the breaker then falls back to the cooldown
        and a trial call (`allow()` sees no probe alive)."""
        if not task.cancelled() and task.exception() is not None:
            log.error("circuit breaker probe failed unexpectedly; falling back to cooldown and trial call",
                      exc_info=task.exception())
