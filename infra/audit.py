"""The audit trail: who did what, when and why — admin calls, consent changes, promotions and rollbacks.

    python -m infra.audit [--since 2026-10-31T00:00:00Z] [--action promotion] [--actor dagster] [--json]

An append-only log of JSON lines under `$HYPERLIFT_HOME/audit/`, one file per writing process
(`<host>-<pid>-<start>.jsonl`): the decision service's workers, Dagster runs and the CLIs each append to their own
file, so no two processes ever write the same file, and a reader merges them by time. Each entry is one `write()`
followed by an `fsync` (entries are rare: people's and guards' actions, not decisions), so an entry that was
answered is on disk.

An entry: `ts` (epoch seconds of the wall clock; `clock` as well when the service runs on a simulated one), `actor`
(an API key id, `dagster`, `cli:<user>`, `guard:<name>`), `action` (dotted: `safe_mode.on`, `clock.advance`,
`consent.revoke`, `model.promote`, `model.rollback`, ...), `target` (what it acted on: a model and version, a
user's keyed hash, a surface), `reason` and `details`. It never holds a raw user id: callers pass the keyed hash
(`serving.decision.identity.user_key`), and `record` refuses a details field named like a raw identifier.
In a deployment of several hosts, point HYPERLIFT_AUDIT_DIR at shared storage (or ship the folder).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from infra.settings import HyperliftSettings

RAW_ID_FIELDS = frozenset({"user_id", "customer_id", "email", "session_id"})
"""Details fields an audit entry may not carry (the log is kept longer than the data and must not re-identify)."""


class AuditError(ValueError):
    """An audit entry that may not be written (a raw identifier in it)."""


def audit_dir(settings: HyperliftSettings | None = None) -> Path:
    """HYPERLIFT_AUDIT_DIR, else `$HYPERLIFT_HOME/audit`."""
    configured = os.environ.get("HYPERLIFT_AUDIT_DIR")
    return Path(configured) if configured else (settings or HyperliftSettings()).home / "audit"


def cli_actor() -> str:
    """`cli:<login>` for a person at a terminal."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "cli:unknown"


class AuditLog:
    """This process's appender (one file), and the reader of every process's files in the folder."""

    def __init__(self, directory: Path | None = None):
        self.directory = Path(directory) if directory is not None else audit_dir()
        self._path: Path | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        """This process's file (named at the first entry)."""
        if self._path is None:
            started = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
            self._path = self.directory / f"{socket.gethostname()}-{os.getpid()}-{started}.jsonl"
        return self._path

    def record(self, actor: str, action: str, target: str = "", reason: str = "", clock: float | None = None,
               **details: Any) -> dict[str, Any]:
        """Append one entry (written and fsynced before it returns); returns it."""
        raw = sorted(RAW_ID_FIELDS & set(details))
        if raw:
            raise AuditError(f"audit entries never hold raw identifiers: drop {raw} (pass the keyed hash as target)")
        if not actor or not action:
            raise AuditError("an audit entry needs an actor and an action")
        entry: dict[str, Any] = {"ts": time.time(), "actor": actor, "action": action, "target": target,
                                 "reason": reason, "details": details}
        if clock is not None:
            entry["clock"] = clock
        line = (json.dumps(entry, default=str, separators=(",", ":")) + "\n").encode()
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        return entry

    def entries(self, since: float | None = None, action: str | None = None, actor: str | None = None) -> list[dict]:
        """Every process's entries, oldest first; `action` matches a prefix (`consent` matches `consent.revoke`)."""
        found = [
            e for e in self._read_all()
            if (since is None or e["ts"] >= since)
            and (action is None or e["action"] == action or e["action"].startswith(action + "."))
            and (actor is None or e["actor"] == actor)
        ]
        return sorted(found, key=lambda e: e["ts"])

    def _read_all(self) -> Iterator[dict]:
        if not self.directory.exists():
            return
        for path in sorted(self.directory.glob("*.jsonl")):
            with path.open("rb") as lines:
                for line in lines:
                    if line.endswith(b"\n"):  # a line cut short by a crash is not an entry
                        yield json.loads(line)


_default: AuditLog | None = None


def default_log() -> AuditLog:
    """The process's audit log under HYPERLIFT_AUDIT_DIR / HYPERLIFT_HOME (created at first use)."""
    global _default
    if _default is None or _default.directory != audit_dir():
        _default = AuditLog()
    return _default


def _format(entries: Iterable[dict]) -> str:
    rows = [f"{datetime.fromtimestamp(e['ts'], timezone.utc).isoformat(timespec='seconds')}  {e['actor']:<16} "
            f"{e['action']:<18} {e['target']:<28} {e['reason']}" for e in entries]
    return "\n".join(rows) if rows else "(no entries)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Show the audit trail (every process's entries, oldest first).")
    parser.add_argument("--since", help="ISO-8601 instant with offset, e.g. 2026-10-31T00:00:00Z")
    parser.add_argument("--action", help="an action or its prefix: consent, model.promote, safe_mode")
    parser.add_argument("--actor")
    parser.add_argument("--json", action="store_true", help="one JSON entry per line")
    args = parser.parse_args(argv)
    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since.replace("Z", "+00:00")).timestamp()
        except ValueError:
            parser.error(f"--since {args.since!r} is not an ISO-8601 instant (e.g. 2026-10-31T00:00:00Z)")
    found = default_log().entries(since, args.action, args.actor)
    print("\n".join(json.dumps(e) for e in found) if args.json else _format(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
