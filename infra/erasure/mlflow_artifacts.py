"""MLflow: what runs logged about a user. Models are logged with an input example, the first rows of their training
set (training/registry.py `log_and_register`): real users' feature rows. The user's rows are removed from every
`input_example.json` and `serving_input_example.json` under the artifact root (a row of zeros is left if none
remains, so the model's example stays loadable). Params, metrics and tags hold no user data (the dataset hash is a
digest of a whole training set); the models themselves are aggregates of everyone's data and are left as they are.
"""

from __future__ import annotations

from collections.abc import Iterator

import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from infra.erasure.lake import matching_rows, parquet_files
from infra.erasure.receipt import StoreReport
from infra.erasure.subject import Subject

EXAMPLE_FILES = ("input_example.json", "serving_input_example.json")


def subject_feature_rows(root: Path, subject: Subject) -> list[dict[str, float]]:
    """The user's numeric rows in every lake table (features, snapshots, training sets), as column → value."""
    rows: list[dict[str, float]] = []
    for path in parquet_files(root):
        found = matching_rows(path, subject, set())
        if found is not None:
            table, mask = found
            for row in table.filter(pa.array(mask)).to_pylist():
                rows.append({k: float(v) for k, v in row.items()
                             if isinstance(v, int | float) and not isinstance(v, bool)})
    return rows


def _split(example: dict[str, Any]) -> dict[str, Any] | None:
    """The {"columns", "data"} part of an input example (plain, or under "dataframe_split")."""
    if isinstance(example.get("dataframe_split"), dict):
        example = example["dataframe_split"]
    return example if isinstance(example.get("columns"), list) and isinstance(example.get("data"), list) else None


def _matches(columns: list[str], values: list[Any], rows: list[dict[str, float]]) -> bool:
    """Whether an example row equals one of the user's rows on every column (compared at float32: the example may
    print a float32 feature with fewer digits)."""
    for row in rows:
        if all(c in row for c in columns) and all(
            isinstance(v, int | float) and np.float32(v) == np.float32(row[c]) for c, v in zip(columns, values)
        ):
            return True
    return False


def erase_examples(artifacts: Path, home: Path, rows: list[dict[str, float]], report: StoreReport) -> None:
    """Drop the user's rows (`rows`, read from the lake before it was erased) from every logged input example."""
    if not Path(artifacts).is_dir():
        report.notes.append(f"no local artifact root at {artifacts}: examples in a remote store were not checked")
        return
    for path, example, split in _examples(artifacts):
        kept = [values for values in split["data"] if not _matches(split["columns"], values, rows)]
        removed = len(split["data"]) - len(kept)
        if not removed:
            continue
        split["data"] = kept or [[0.0] * len(split["columns"])]
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(example, indent=2 if path.name.startswith("serving") else None))
        os.replace(tmp, path)
        report.rows_removed += removed
        report.files_rewritten.append(str(path.relative_to(home)) if path.is_relative_to(home) else str(path))


def export_examples(artifacts: Path, rows: list[dict[str, float]]) -> list[dict[str, Any]]:
    """The user's rows found in logged input examples: {file, row} per match."""
    found: list[dict[str, Any]] = []
    if not Path(artifacts).is_dir():
        return found
    for path, _, split in _examples(artifacts):
        for values in split["data"]:
            if _matches(split["columns"], values, rows):
                found.append({"file": str(path), "row": dict(zip(split["columns"], values))})
    return found


def _examples(artifacts: Path) -> Iterator[tuple[Path, dict, dict]]:
    """(file, parsed example, its columns/data part) of every logged input example under `artifacts`."""
    for name in EXAMPLE_FILES:
        for path in sorted(Path(artifacts).rglob(name)):
            example = json.loads(path.read_text())
            split = _split(example) if isinstance(example, dict) else None
            if split is not None:
                yield path, example, split
