"""Log files: the lines that name the user removed from every text log the project writes under the home (Dagster's
compute logs, `*.log`) and in the folders of HYPERLIFT_SERVICE_LOG_DIRS (where a deployment keeps the decision
service's JSON lines, which go to stderr). The service logs users by pseudonym only (a failed feature read); a line
is removed when it holds the pseudonym, a user field with the raw id, or a Redis key tagged with the raw id.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from infra.erasure.receipt import StoreReport
from infra.erasure.subject import Subject

LOG_SUFFIXES = (".log", ".out", ".err")
SKIP_DIRS = ("audit", "erasure")  # the audit trail and the receipts name the user by pseudonym on purpose


def log_files(home: Path, extra_dirs: Iterable[Path] = ()) -> Iterator[Path]:
    """Text logs under the home (outside the audit trail and receipts) and in `extra_dirs`."""
    seen: set[Path] = set()
    for root, skip in [(Path(home), True), *((Path(d), False) for d in extra_dirs)]:
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if path.suffix in LOG_SUFFIXES + ((".jsonl",) if not skip else ()) and path.is_file():
                if skip and path.relative_to(root).parts[0] in SKIP_DIRS:
                    continue
                if path not in seen:
                    seen.add(path)
                    yield path


def line_pattern(subject: Subject) -> re.Pattern[bytes]:
    """A line that names the user: the user key, `user_id` / `user` with the raw id or a pseudonym, or a key tagged
    `{id}`."""
    uid = b"(?:" + b"|".join(str(i).encode() for i in subject.ids) + b")"
    return re.compile(
        b"|".join(re.escape(key.encode()) for key in subject.user_keys)
        + rb"|user(?:_id)?[\"']?\s*[:=]\s*[\"']?" + uid + rb"(?![0-9])"
        + rb"|hyperlift:[a-z_]+:\{" + uid + rb"\}"
    )


def erase_logs(home: Path, extra_dirs: Iterable[Path], subject: Subject, report: StoreReport) -> None:
    """Rewrite every log file that names the user without those lines."""
    pattern = line_pattern(subject)
    for path in log_files(home, extra_dirs):
        data = path.read_bytes()
        if not pattern.search(data):
            continue
        lines = data.splitlines(keepends=True)
        kept = [line for line in lines if not pattern.search(line)]
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(b"".join(kept))
        os.replace(tmp, path)
        report.rows_removed += len(lines) - len(kept)
        report.files_rewritten.append(str(path.relative_to(home)) if path.is_relative_to(home) else str(path))


def export_logs(home: Path, extra_dirs: Iterable[Path], subject: Subject) -> list[str]:
    """The log lines that name the user."""
    pattern = line_pattern(subject)
    return [line.decode(errors="replace").rstrip("\n") for path in log_files(home, extra_dirs)
            for line in path.read_bytes().splitlines(keepends=True) if pattern.search(line)]
