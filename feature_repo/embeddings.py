"""Schema of the user embedding feature view, and the offline rows it is built from.

One definition of the embedding's shape: training (`training.embeddings`), the Dagster assets, the Feast view and
serving all read `EMBEDDING_DIM` and `EMBEDDING_FEATURES` from here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

EMBEDDING_DIM = 16
"""d of E ≈ UᵀV: components of every user and item vector."""

EMBEDDING_FEATURES: tuple[str, ...] = tuple(f"emb_{k}" for k in range(EMBEDDING_DIM))
"""Columns of `user_embedding_fv`, all Float32, in vector order (one field per component: the serving reader and
Feast's Redis store handle scalars, and a field per component keeps the view readable in the Feast UI)."""

USER_EMBEDDING_TABLE = "features/user_embedding.parquet"
"""Offline source of `user_embedding_fv`, written by the embedding assets."""


def next_stamp(watermark: pd.Timestamp, newest_written: pd.Timestamp | None) -> pd.Timestamp:
    """The event time of a new batch of vectors: the newest event it saw, moved to one second after the newest row
    already written when that is later.

    Feast's Redis store keeps a row only if it is newer (in whole seconds) than the one online, so a retrain over
    the same events must still be stamped later, or Redis would keep vectors of the previous item space.
    """
    stamp = pd.Timestamp(watermark).tz_convert("UTC").ceil("s")
    if newest_written is not None:
        stamp = max(stamp, pd.Timestamp(newest_written).tz_convert("UTC").floor("s") + pd.Timedelta(seconds=1))
    return stamp


def user_embedding_rows(user_ids: np.ndarray, vectors: np.ndarray, as_of: pd.Timestamp) -> pd.DataFrame:
    """Rows of the user embedding table: one per user, stamped `as_of` (UTC), components as Float32 columns."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != EMBEDDING_DIM:
        raise ValueError(f"user vectors must have shape (n, {EMBEDDING_DIM}), got {vectors.shape}")
    if len(user_ids) != len(vectors):
        raise ValueError(f"{len(user_ids)} user ids for {len(vectors)} vectors")
    frame = pd.DataFrame(vectors, columns=list(EMBEDDING_FEATURES))
    frame.insert(0, "user_id", np.asarray(user_ids, dtype=np.int64))
    as_of = pd.Timestamp(as_of)
    if as_of.tzinfo is None:
        raise ValueError(f"as_of must be timezone-aware (UTC), got {as_of}")
    frame.insert(1, "event_timestamp", as_of.tz_convert("UTC"))
    return frame


def user_vectors(frame: pd.DataFrame) -> np.ndarray:
    """The (n, EMBEDDING_DIM) float32 matrix of a frame holding the embedding columns."""
    return frame[list(EMBEDDING_FEATURES)].to_numpy(dtype=np.float32)
