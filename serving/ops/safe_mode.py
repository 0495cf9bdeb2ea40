"""The global pause switch: while on, every surface of every worker answers with its neutral action.

The switch lives in Redis (one key), so one call reaches every worker and instance; each process polls it every
`poll_s` seconds and keeps the last state it read if Redis cannot be reached (counted). `forced=True` (from the
environment) turns it on in this process whatever Redis says: the switch that works with Redis down.

A Redis restart must not turn it off: a crash restarts from the last snapshot (or the last fsynced second of the
append-only file), which may predate the switch. So the switch is a last-writer-wins register, kept twice:
`{"enabled", "reason", "since"}` in Redis (off is a stored state too, not a missing key) and the same record in a
small local file (`state_file`, fsynced) that every process of the host reads at start and updates whenever it sees
a newer state. When Redis has no record, or an older one than the file, the process writes its record back
(a script that only replaces an older record, so two processes re-asserting at once agree, and a newer decision
made elsewhere is never overwritten). Newer is by `since`, the wall-clock time of the decision.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path

import redis

from serving.ops.redaction import redis_failure

log = logging.getLogger(__name__)

# Replace the record only if there is none or it is older (by "since"); answer the record that stays.
_SET_IF_NEWER = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and type(decoded) == 'table' and tonumber(decoded['since'] or 0) >= tonumber(ARGV[2]) then
    return current
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""


def _record(raw: bytes | str | None) -> dict | None:
    """A stored switch record; records written before `enabled` existed were only written to turn it on."""
    if raw is None:
        return None
    record = json.loads(raw)
    record.setdefault("enabled", True)
    record.setdefault("since", 0.0)
    return record


class SafeMode:
    """Reads and writes the switch; `enabled` is a plain attribute read per decision (no Redis call)."""

    def __init__(self, client: redis.Redis, key: str, forced: bool = False, poll_s: float = 1.0,
                 state_file: Path | None = None):
        self.client = client
        self.key = key
        self.forced = forced
        self.poll_s = poll_s
        self.state_file = Path(state_file) if state_file is not None else None
        self.remote = False
        self.reason: str | None = "forced by HYPERLIFT_SERVING_SAFE_MODE" if forced else None
        self.redis_ok: bool | None = None  # last poll: could Redis be read? (readiness uses it)
        self.poll_failures = 0
        self.reasserted = 0  # times Redis lacked the switch (or held an older one) and it was written back
        self._record: dict | None = self._load()
        if self._record is not None:
            self._apply(self._record)
        self._script = client.register_script(_SET_IF_NEWER)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        """True while decisions must be neutral."""
        return self.forced or self.remote

    def set(self, enabled: bool, reason: str) -> None:
        """Turn the switch on or off for every worker; raises redis.RedisError when Redis cannot take it."""
        record = {"enabled": enabled, "reason": reason, "since": time.time()}
        self._script(keys=[self.key], args=[json.dumps(record), record["since"]])
        self._adopt(record)
        log.warning("safe mode %s: %s", "ON" if enabled else "off", reason)

    def refresh(self) -> None:
        """Read the switch from Redis; on failure keep the last state and count it. Write our record back when
        Redis lost it or holds an older one."""
        try:
            remote = _record(self.client.get(self.key))
            if self._record is not None and (remote is None or remote["since"] < self._record["since"]):
                remote = _record(self._script(keys=[self.key], args=[json.dumps(self._record), self._record["since"]]))
                self.reasserted += 1
                log.warning("safe-mode switch missing or older in Redis (a restart lost it?): wrote back %s from %s",
                            self._record, self.state_file)
        except redis.exceptions.RedisError as exc:
            self.redis_ok = False
            self.poll_failures += 1
            log.warning("safe-mode poll failed (keeping %s): %s", self.enabled, redis_failure(exc))
            return
        self.redis_ok = True
        if remote is None:
            self.remote = False
            if not self.forced:
                self.reason = None
        elif self._record is None or remote["since"] > self._record["since"]:
            self._adopt(remote)
        else:
            self._apply(remote)

    def _adopt(self, record: dict) -> None:
        """A newer state: use it and keep it on disk."""
        self._record = record
        self._apply(record)
        self._save(record)

    def _apply(self, record: dict) -> None:
        self.remote = bool(record["enabled"])
        if self.remote:
            self.reason = record.get("reason")
        elif not self.forced:
            self.reason = None

    def _load(self) -> dict | None:
        if self.state_file is None or not self.state_file.exists():
            return None
        try:
            return _record(self.state_file.read_text())
        except (OSError, ValueError) as exc:
            log.error("safe-mode file %s unreadable (%s): relying on Redis alone; delete or fix it",
                      self.state_file, exc)
            return None

    def _save(self, record: dict) -> None:
        """Write the record through a temp file, fsync, rename: a crash leaves the old or the new one."""
        if self.state_file is None:
            return
        tmp = self.state_file.with_name(f".{self.state_file.name}.{uuid.uuid4().hex}.tmp")
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as handle:
                json.dump(record, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.state_file)
        except OSError as exc:
            log.error("safe-mode switch not saved to %s (%s): a Redis restart could lose it; fix the folder",
                      self.state_file, exc)
        finally:
            tmp.unlink(missing_ok=True)

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
