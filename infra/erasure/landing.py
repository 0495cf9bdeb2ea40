"""The landing folder (dagster_project/resources/landing.py): the shop's files, or the simulator's, that ingestion
reads into the raw lake. The user's rows go from every file there too, or the next ingestion would bring them back.

Parquet files are filtered like the lake's (infra/erasure/lake.py); JSON-lines files lose the lines whose record
names the user; CSV files the rows whose `user_id` is the user's (rewritten by the csv module: quoting may be
normalised, values are not). Compressed `.gz` files are rewritten compressed.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import uuid
from pathlib import Path

import pyarrow as pa

from infra.erasure.lake import matching_rows, write_atomically
from infra.erasure.receipt import StoreReport
from infra.erasure.subject import Subject
from infra.settings import HyperliftSettings


def landing_dir(settings: HyperliftSettings) -> Path:
    """HYPERLIFT_LANDING_DIR, else `<home>/landing` (settings without a landing folder: the latter)."""
    resolved = getattr(settings, "resolved_landing_dir", None)  # a home from before the landing folder existed
    return Path(resolved) if resolved is not None else settings.home / "landing"


def _read_text(path: Path) -> str:
    return gzip.decompress(path.read_bytes()).decode() if path.name.endswith(".gz") else path.read_text()


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    data = text.encode()
    tmp.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    os.replace(tmp, path)


def _kept_jsonl(text: str, subject: Subject) -> tuple[str, int]:
    kept, removed = [], 0
    for line in text.splitlines(keepends=True):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if subject.owns_record(record):
            removed += 1
        else:
            kept.append(line)
    return "".join(kept), removed


def _kept_csv(text: str, subject: Subject) -> tuple[str, int]:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or "user_id" not in rows[0]:
        return text, 0
    column = rows[0].index("user_id")
    kept = [rows[0]] + [r for r in rows[1:] if not (len(r) > column and subject.owns_id(r[column]))]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(kept)
    return out.getvalue(), len(rows) - len(kept)


def erase_landing(folder: Path, home: Path, subject: Subject, report: StoreReport) -> None:
    """Remove the user's rows from every file of the landing folder."""
    if not folder.is_dir():
        return
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        name = path.name.removesuffix(".gz")
        if name.endswith(".parquet"):
            found = matching_rows(path, subject, set())
            removed = 0 if found is None else int(found[1].sum())
            if found is not None:
                write_atomically(path, found[0].filter(pa.array(~found[1])))
        elif name.endswith((".jsonl", ".csv")):
            text = _read_text(path)
            kept, removed = (_kept_jsonl if name.endswith(".jsonl") else _kept_csv)(text, subject)
            if removed:
                _write_text(path, kept)
        else:
            continue
        if removed:
            report.rows_removed += removed
            report.files_rewritten.append(str(path.relative_to(home)) if path.is_relative_to(home) else str(path))
