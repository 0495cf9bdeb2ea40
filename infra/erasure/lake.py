"""The parquet lake: every table under `$HYPERLIFT_HOME/data`, found by its columns rather than by a list of names,
so a table added later is covered as soon as it carries a user column.

- a `user_id` column (raw, validated and quarantined events, the CRM customers, tiles, activity and profile
  snapshots, embeddings, training sets, the consent lake): the user's rows (the raw id in the raw layer, a pseudonym
  below it: `Subject.ids`) are removed, and so are event rows with
  no user id whose `session_id` is one of the user's sessions (a quarantined event that lost its user field);
- an `event` column (events refused by `POST /v1/events`, as received): rows whose event names the user;
- a `user_key` column: in the decision log (`decisions/`, `outcomes/`, `decision_outcomes/`) the user's rows are
  anonymised (infra/erasure/anonymise.py), elsewhere (training sets built from the log) removed;
- `rejected/*.jsonl` of the drains (records that could not be stored): the user's lines are removed.

Files are rewritten whole through a temp file and a rename (readers never see half a file), with the table's own
schema and metadata, so a file the erasure rewrote is byte for byte the file the pipeline would write without the
user (tests/infra/erasure/test_erasure.py holds it to that).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from infra.erasure.anonymise import ANONYMOUS_RECORD, Anonymiser, random_token
from infra.erasure.receipt import StoreReport
from infra.erasure.subject import Subject

DECISION_LOG_ROOTS = ("decisions", "outcomes", "decision_outcomes")
"""Lake folders of the decision log (dagster_project/assets/decisions.py: DECISION_TRACE, OUTCOME_EVENTS,
DECISION_OUTCOMES): anonymised, not removed."""
REJECTED_DIR = "rejected"  # serving/store/decision_log.py REJECTED_DIR


def parquet_files(root: Path) -> Iterator[Path]:
    """Every parquet file under `root`, skipping in-flight temp files (dot-files)."""
    for path in sorted(Path(root).rglob("*.parquet")):
        if not any(part.startswith(".") for part in path.relative_to(root).parts):
            yield path


def in_decision_log(path: Path, root: Path) -> bool:
    """Whether a lake file belongs to the decision log (anonymised rather than removed)."""
    return path.relative_to(root).parts[0] in DECISION_LOG_ROOTS


def subject_sessions(root: Path, subject: Subject) -> set[str]:
    """Session ids of the user's events anywhere in the lake (to find their events that lost the user field)."""
    sessions: set[str] = set()
    for path in parquet_files(root):
        names = set(pq.read_schema(path).names)
        if {"user_id", "session_id"} <= names:
            table = pq.read_table(path, columns=["user_id", "session_id"])
            mine = pa.array(id_mask(table["user_id"], subject))
            sessions.update(s for s in table["session_id"].filter(mine).to_pylist() if s)
    return sessions


def id_mask(column: pa.ChunkedArray, subject: Subject) -> np.ndarray:
    """Rows of a user-id column holding the user's id (integers, or ids kept as received text)."""
    if pa.types.is_integer(column.type):
        width = column.type.bit_width
        low, high = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if pa.types.is_signed_integer(column.type) \
            else (0, (1 << width) - 1)
        ids = pa.array([i for i in subject.ids if low <= i <= high], type=column.type)  # a narrow column: fewer fit
        return pc.fill_null(pc.is_in(column, ids), False).to_numpy(zero_copy_only=False)
    return np.array([subject.owns_id(v) for v in column.to_pylist()], dtype=bool)


def subject_mask(table: pa.Table, subject: Subject, sessions: set[str]) -> np.ndarray:
    """Rows of `table` about the user (see the module docstring for each column)."""
    mask = np.zeros(table.num_rows, dtype=bool)
    names = set(table.column_names)
    if "user_id" in names:
        column = table["user_id"]
        mask |= id_mask(column, subject)
        if "session_id" in names and sessions and pa.types.is_string(table["session_id"].type):
            orphan = pc.and_(pc.is_null(column), pc.is_in(table["session_id"], pa.array(sorted(sessions))))
            mask |= pc.fill_null(orphan, False).to_numpy(zero_copy_only=False)
    if "user_key" in names:
        keys = pc.is_in(table["user_key"], pa.array(subject.user_keys, type=table["user_key"].type))
        mask |= pc.fill_null(keys, False).to_numpy(zero_copy_only=False)
    if "event" in names:
        mask |= np.array([subject.owns_record({"event": v}) for v in table["event"].to_pylist()], dtype=bool)
    return mask


USER_COLUMNS = ("user_id", "user_key", "event")
"""Columns that name a user; a file without any is not read."""


def matching_rows(path: Path, subject: Subject, sessions: set[str]) -> tuple[pa.Table, np.ndarray] | None:
    """(the whole table, the user's rows) of a lake file, or None when it holds nothing of the user's. Only the id
    columns are read to decide, so the lake's big tables are read whole only where the user is."""
    names = pq.read_schema(path).names
    if not set(USER_COLUMNS) & set(names):
        return None
    ids = pq.read_table(path, columns=[c for c in (*USER_COLUMNS, "session_id") if c in names])
    mask = subject_mask(ids, subject, sessions)
    return (pq.read_table(path), mask) if mask.any() else None


def anonymise_rows(table: pa.Table, mask: np.ndarray, anonymiser: Anonymiser) -> pa.Table:
    """The decision-log rows of `mask` anonymised in place (same columns, types, order and metadata)."""
    rows = np.flatnonzero(mask)
    ids = table["decision_id"].to_pylist() if "decision_id" in table.column_names else [None] * table.num_rows
    replacements: dict[str, list] = {"user_key": [anonymiser.token(ids[i]) for i in rows]}
    if "context_hash" in table.column_names:
        replacements["context_hash"] = [random_token() for _ in rows]
    for name, value in ANONYMOUS_RECORD.items():
        if name in table.column_names:
            replacements[name] = [value] * len(rows)
    for name, values in replacements.items():
        index = table.column_names.index(name)
        column = table[name].to_pylist()
        for row, value in zip(rows, values):
            column[row] = value
        spec = table.schema.field(index)
        table = table.set_column(index, spec, pa.array(column, type=spec.type))
    return table


def write_atomically(path: Path, table: pa.Table) -> None:
    """Replace `path` by `table` through a temp file in the same folder, fsynced, then renamed; the folder is fsynced
    too, so the rename survives a crash."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def erase_lake(root: Path, home: Path, subject: Subject, anonymiser: Anonymiser, report: StoreReport) -> None:
    """Remove or anonymise the user's rows in every parquet file and rejected-records file under `root`."""
    if not Path(root).is_dir():
        report.notes.append(f"no lake at {root}")
        return
    sessions = subject_sessions(root, subject)
    for path in parquet_files(root):
        found = matching_rows(path, subject, sessions)
        if found is None:
            continue
        table, mask = found
        if in_decision_log(path, root):
            table = anonymise_rows(table, mask, anonymiser)
            report.rows_anonymised += int(mask.sum())
        else:
            table = table.filter(pa.array(~mask))
            report.rows_removed += int(mask.sum())
        write_atomically(path, table)
        report.files_rewritten.append(str(path.relative_to(home)))
    for path in sorted(Path(root).rglob(f"{REJECTED_DIR}/*.jsonl")):
        kept, removed = [], 0
        for line in path.read_text().splitlines(keepends=True):
            if _rejected_line_of(line, subject):
                removed += 1
            else:
                kept.append(line)
        if removed:
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            tmp.write_text("".join(kept))
            os.replace(tmp, path)
            report.entries_removed += removed
            report.files_rewritten.append(str(path.relative_to(home)))


def _rejected_line_of(line: str, subject: Subject) -> bool:
    """Whether a drain's rejected line ({"stream_id", "reason", "record": raw text}) holds the user."""
    if any(key in line for key in subject.user_keys):
        return True
    try:
        raw = json.loads(line).get("record", "")
        return subject.owns_record(json.loads(raw))
    except (ValueError, AttributeError, TypeError):
        return False


def export_lake(root: Path, subject: Subject, out_dir: Path) -> list[Path]:
    """The user's rows of every lake file, as JSON lines under `out_dir/lake/<table path>.jsonl`."""
    written: list[Path] = []
    if not Path(root).is_dir():
        return written
    sessions = subject_sessions(root, subject)
    for path in parquet_files(root):
        found = matching_rows(path, subject, sessions)
        if found is not None:
            table, mask = found
            target = out_dir / "lake" / path.relative_to(root).with_suffix(".jsonl")
            target.parent.mkdir(parents=True, exist_ok=True)
            rows = table.filter(pa.array(mask)).to_pylist()
            target.write_text("".join(json.dumps(row, default=str) + "\n" for row in rows))
            written.append(target)
    return written
