"""A relocatable home: a copied `.hyperlift/` reads and writes only itself.

Three stores inside the home record absolute paths of the home: MLflow's SQLite store (experiments' artifact
locations, runs' artifact URIs, model versions' sources), each logged model's `MLmodel` file (`artifact_path`) and
Feast's file registry (the file sources of the feature views). A copy of the home opened elsewhere would read the
original's artifacts and register new model versions into the original's folders. So the home records where it
lives (`.location`); when a process first opens the home (settings construction) at another path, those records are
rewritten from the old location to the new one, in the copy only, under a lock. A home without the record (made
before it existed) takes its old location from MLflow's artifact locations. Dagster's run history (event logs that
name files of the old location) is history and stays as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path

from infra.file_lock import file_lock

log = logging.getLogger(__name__)

LOCATION_FILE = ".location"
_LOCK_FILE = ".location.lock"
_MLFLOW_DB = Path("mlflow") / "mlflow.db"
_MLFLOW_ARTIFACTS = Path("mlflow") / "artifacts"
_FEAST_REGISTRY = Path("feast") / "registry.db"
_checked: set[Path] = set()


def ensure_relocated(home: Path) -> Path | None:
    """Make the home's records point at where it is now; returns the old location when it moved (once per process
    and home; a home that does not exist yet is left alone)."""
    home = Path(home).absolute()
    if home in _checked or not home.is_dir():
        return None
    if not os.access(home, os.W_OK):  # a read-only home (a mounted volume): nothing can be rewritten, or needs to be
        log.warning("home %s is read-only: not checking whether it moved", home)
        _checked.add(home)
        return None
    with file_lock(home / _LOCK_FILE):
        old = previous_location(home)
        if old is not None and old != home:
            relocate(home, old)
        if _recorded(home) != home:
            tmp = home / f"{LOCATION_FILE}.{os.getpid()}.tmp"
            tmp.write_text(f"{home}\n")
            os.replace(tmp, home / LOCATION_FILE)
    _checked.add(home)
    return old if old != home else None


def previous_location(home: Path) -> Path | None:
    """Where the home's records say it lives: its `.location` file, else MLflow's artifact locations."""
    recorded = _recorded(home)
    if recorded is not None:
        return recorded
    db = home / _MLFLOW_DB
    if not db.exists():
        return None
    with contextlib.closing(sqlite3.connect(db)) as connection:
        try:
            rows = connection.execute("SELECT artifact_location FROM experiments").fetchall()
        except sqlite3.Error:
            return None
    marker = f"/{_MLFLOW_ARTIFACTS.as_posix()}"
    for (location,) in rows:
        if location and marker in location:
            path = location.split(marker, 1)[0]
            return Path(path.removeprefix("file://"))
    return None


def _recorded(home: Path) -> Path | None:
    try:
        return Path((home / LOCATION_FILE).read_text().strip())
    except OSError:
        return None


def relocate(home: Path, old: Path) -> dict[str, int]:
    """Rewrite every record of `old` in the home's stores to `home`; returns what was rewritten per store."""
    counts = {
        "mlflow_rows": _rewrite_sqlite(home / _MLFLOW_DB, str(old), str(home)),
        "mlmodel_files": _rewrite_mlmodel_files(home / _MLFLOW_ARTIFACTS, str(old), str(home)),
        "feast_registry_fields": _rewrite_feast_registry(home / _FEAST_REGISTRY, str(old), str(home)),
    }
    log.warning("the home moved from %s to %s: rewrote %s", old, home, counts)
    return counts


def _swap(value: str, old: str, new: str) -> str:
    """`old` as a whole path component replaced (so /a/home does not match /a/home2)."""
    if value == old:
        return new
    return value.replace(old + "/", new + "/")


def _rewrite_sqlite(db: Path, old: str, new: str) -> int:
    """Every text column of every table: the old home's paths → the new ones."""
    if not db.exists():
        return 0
    changed = 0
    with contextlib.closing(sqlite3.connect(db)) as connection:
        tables = [name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            columns = [row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')
                       if any(kind in (row[2] or "").upper() for kind in ("CHAR", "TEXT", "CLOB", "STRING"))]
            for column in columns:
                cursor = connection.execute(
                    f'UPDATE "{table}" SET "{column}" = REPLACE("{column}", ?, ?) WHERE "{column}" LIKE ?',
                    (old + "/", new + "/", f"%{old}/%"),
                )
                changed += cursor.rowcount
                cursor = connection.execute(f'UPDATE "{table}" SET "{column}" = ? WHERE "{column}" = ?', (new, old))
                changed += cursor.rowcount
        connection.commit()
    return changed


def _rewrite_mlmodel_files(artifacts: Path, old: str, new: str) -> int:
    changed = 0
    for path in artifacts.rglob("MLmodel") if artifacts.exists() else ():
        text = path.read_text()
        swapped = "\n".join(_swap(line, old, new) for line in text.split("\n"))
        if swapped != text:
            path.write_text(swapped)
            changed += 1
    return changed


def _rewrite_feast_registry(registry: Path, old: str, new: str) -> int:
    """Every string field of the registry protobuf (file sources' paths, mostly)."""
    if not registry.exists():
        return 0
    from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto

    proto = RegistryProto()
    proto.ParseFromString(registry.read_bytes())
    changed = _rewrite_message(proto, old, new)
    if changed:
        tmp = registry.with_name(registry.name + ".relocating")
        tmp.write_bytes(proto.SerializeToString())
        os.replace(tmp, registry)
    return changed


def _repeated(field) -> bool:  # noqa: ANN001 - a protobuf FieldDescriptor
    is_repeated = getattr(field, "is_repeated", None)  # protobuf ≥ 6; `label` before
    return bool(is_repeated) if is_repeated is not None else field.label == field.LABEL_REPEATED


def _rewrite_message(message, old: str, new: str) -> int:  # noqa: ANN001 - any protobuf message
    from google.protobuf.descriptor import FieldDescriptor

    changed = 0
    for field, value in message.ListFields():
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if is_map:
            value_field = field.message_type.fields_by_name["value"]
            for key in list(value):
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    changed += _rewrite_message(value[key], old, new)
                elif value_field.type == FieldDescriptor.TYPE_STRING and _swap(value[key], old, new) != value[key]:
                    value[key] = _swap(value[key], old, new)
                    changed += 1
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in value if _repeated(field) else [value]:
                changed += _rewrite_message(item, old, new)
        elif field.type == FieldDescriptor.TYPE_STRING:
            if _repeated(field):
                for i, item in enumerate(value):
                    if _swap(item, old, new) != item:
                        value[i] = _swap(item, old, new)
                        changed += 1
            elif _swap(value, old, new) != value:
                setattr(message, field.name, _swap(value, old, new))
                changed += 1
    return changed
