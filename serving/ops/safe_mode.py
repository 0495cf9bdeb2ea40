"""The global pause switch: while on, every surface of every worker answers with its neutral action.

The switch lives in Redis (one key), so one call reaches every worker and instance; each process polls it every
`poll_s` seconds and keeps the last state it read if Redis cannot be reached (counted). `forced=True` (from the
environment) turns it on in this process whatever Redis says: the switch that works with Redis down.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import redis

log = logging.getLogger(__name__)


class SafeMode:
    """Reads and writes the switch; `enabled` is a plain attribute read per decision (no Redis call)."""

    def __init__(self, client: redis.Redis, key: str, forced: bool = False, poll_s: float = 1.0):
        self.client = client
        self.key = key
        self.forced = forced
        self.poll_s = poll_s
        self.remote = False
        self.reason: str | None = "forced by HYPERLIFT_SERVING_SAFE_MODE" if forced else None
        self.redis_ok: bool | None = None  # last poll: could Redis be read? (readiness uses it)
        self.poll_failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        """True while decisions must be neutral."""
        return self.forced or self.remote

    def set(self, enabled: bool, reason: str) -> None:
        """Turn the switch on or off for every worker; raises redis.RedisError when Redis cannot take it."""
        if enabled:
            self.client.set(self.key, json.dumps({"reason": reason, "since": time.time()}))
        else:
            self.client.delete(self.key)
        self.remote, self.reason = enabled, (reason if enabled else None)
        log.warning("safe mode %s: %s", "ON" if enabled else "off", reason)

    def refresh(self) -> None:
        """Read the switch from Redis; on failure keep the last state and count it."""
        try:
            raw = self.client.get(self.key)
        except redis.exceptions.RedisError as exc:
            self.redis_ok = False
            self.poll_failures += 1
            log.warning("safe-mode poll failed (keeping %s): %s", self.enabled, exc)
            return
        self.redis_ok = True
        self.remote = raw is not None
        if self.remote:
            self.reason = json.loads(raw).get("reason")
        elif not self.forced:
            self.reason = None

    def start(self) -> None:
        """Read once now, then poll in a daemon thread."""
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="safe-mode-poll", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.refresh()

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
