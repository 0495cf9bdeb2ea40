"""The parquet data folder: one place that knows table paths and how to read and write them."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd

from feature_repo.definitions import ACTIVITY_TABLE, PROFILE_TABLE
from feature_repo.embeddings import USER_EMBEDDING_TABLE
from feature_repo.pseudonyms import lake_pseudonymizer
from infra.keys import Pseudonymizer

# Event tables are folders of daily partitions (`<table>/<YYYY-MM-DD>.parquet`, keyed by arrival day).
RAW_EVENTS = "raw/events"
CUSTOMERS = "raw/customers.parquet"
ACTION_CATALOGUE = "raw/actions.parquet"
VALIDATED_EVENTS = "validated/events"
QUARANTINE = "quarantine/events"
LANDING_QUARANTINE = "quarantine/landing"  # rows of landing files that could not be typed at all, kept as text
ACTIVITY_TILES = "features/activity_tiles"  # integer tiles per (user, event day) of the events each day brought
VALIDATION_REPORT = "reports/validation_report.parquet"
USER_ACTIVITY = ACTIVITY_TABLE
USER_PROFILE = PROFILE_TABLE
TRAINING_SET = "training/training_set.parquet"
USER_EMBEDDING = USER_EMBEDDING_TABLE
ITEM_INDEX_DIR = "embeddings/items"  # item vectors (parquet) + HNSW graph: serving.decision.candidates.ItemIndex.load
EMBEDDING_MANIFEST = "embeddings/manifest.json"  # watermarks and parameters of the last full train and refresh


class DataLakeResource(dg.ConfigurableResource):
    """Parquet tables under `root` (HYPERLIFT_HOME/data by default), keyed below the raw layer by the pseudonym key
    in `keys_file` (feature_repo/pseudonyms.py; outside the lake, infra/keys.py)."""

    root: str
    keys_file: str = ""  # empty: HYPERLIFT_KEYS_FILE, else $HYPERLIFT_HOME/keys/keys.json

    def pseudonymizer(self) -> Pseudonymizer:
        """The door's key: the current pseudonym key of this deployment, made on the first run."""
        return lake_pseudonymizer(path=Path(self.keys_file) if self.keys_file else None)

    def path(self, table: str) -> Path:
        """Absolute path of a table."""
        return Path(self.root) / table

    def write(self, table: str, frame: pd.DataFrame) -> Path:
        """Write a table atomically (temp file + rename) so readers never see half a file."""
        return self._write(self.path(table), frame)

    def write_partition(self, table: str, key: str, frame: pd.DataFrame) -> Path:
        """Write one daily partition of a partitioned table (replaces it whole: re-runs are idempotent)."""
        return self._write(self.path(table) / f"{key}.parquet", frame)

    @staticmethod
    def _write(path: Path, frame: pd.DataFrame) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")  # dot-files are skipped by readers of the folder
        frame.to_parquet(tmp, index=False)
        tmp.replace(path)
        return path

    def partition_keys(self, table: str) -> list[str]:
        """Keys of the partitions of `table` on disk, oldest first."""
        folder = self.path(table)
        return sorted(p.stem for p in folder.glob("*.parquet")) if folder.is_dir() else []

    def read(self, table: str, columns: list[str] | None = None) -> pd.DataFrame:
        """Read a table (a partitioned one whole); a clear error names the asset to materialize when it is missing."""
        path = self.path(table)
        if path.is_dir():
            return self.read_partitions(table, self.partition_keys(table), columns)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; materialize the asset that writes {table} first")
        return pd.read_parquet(path, columns=columns)

    def read_partitions(self, table: str, keys: list[str], columns: list[str] | None = None) -> pd.DataFrame:
        """The given partitions of `table`, concatenated in key order (each must exist)."""
        missing = [k for k in keys if not (self.path(table) / f"{k}.parquet").exists()]
        if missing:
            raise FileNotFoundError(
                f"{self.path(table)} lacks partitions {missing[:5]}{'…' if len(missing) > 5 else ''}; materialize "
                f"the asset that writes {table} for those days first"
            )
        if not keys:
            raise FileNotFoundError(f"{self.path(table)} has no partitions; materialize the asset that writes {table}")
        frames = [pd.read_parquet(self.path(table) / f"{k}.parquet", columns=columns) for k in keys]
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
