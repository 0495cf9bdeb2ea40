"""The parquet data folder: one place that knows table paths and how to read and write them."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd

from feature_repo.definitions import ACTIVITY_TABLE, PROFILE_TABLE
from feature_repo.embeddings import USER_EMBEDDING_TABLE

RAW_EVENTS = "raw/events.parquet"
CUSTOMERS = "raw/customers.parquet"
ACTION_CATALOGUE = "raw/actions.parquet"
VALIDATED_EVENTS = "validated/events.parquet"
QUARANTINE = "quarantine/events.parquet"
USER_ACTIVITY = ACTIVITY_TABLE
USER_PROFILE = PROFILE_TABLE
TRAINING_SET = "training/training_set.parquet"
USER_EMBEDDING = USER_EMBEDDING_TABLE
ITEM_INDEX_DIR = "embeddings/items"  # item vectors (parquet) + HNSW graph: serving.candidates.ItemIndex.load
EMBEDDING_MANIFEST = "embeddings/manifest.json"  # watermarks and parameters of the last full train and refresh


class DataLakeResource(dg.ConfigurableResource):
    """Parquet tables under `root` (HYPERLIFT_HOME/data by default)."""

    root: str

    def path(self, table: str) -> Path:
        """Absolute path of a table."""
        return Path(self.root) / table

    def write(self, table: str, frame: pd.DataFrame) -> Path:
        """Write a table atomically (temp file + rename) so readers never see half a file."""
        path = self.path(table)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".parquet.tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(path)
        return path

    def read(self, table: str, columns: list[str] | None = None) -> pd.DataFrame:
        """Read a table; a clear error names the asset to materialize when it is missing."""
        path = self.path(table)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; materialize the asset that writes {table} first")
        return pd.read_parquet(path, columns=columns)
