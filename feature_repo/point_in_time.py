"""Point-in-time join of an entity frame with Feast feature views read straight from their parquet sources.

For each entity row and each view: the newest feature row of the same key with feature_ts <= entity_ts and, when
the view has a TTL, feature_ts >= entity_ts - TTL; equal feature timestamps are ordered by the source's created
timestamp (when it has one, nulls oldest); features are null when no row qualifies. These are the semantics of
Feast's `get_historical_features` (its SQL offline stores return exactly this). The join is one sort of the
feature keys and one binary search per entity row, reading only the columns it needs, where Feast's file offline
store merges every entity row with every feature row of its key and filters afterwards.

Two ways in which Feast's *file* offline store (pandas/dask, feast 0.67) differs from these semantics:
- it drops an entity row, instead of returning nulls, when a view has rows for the key but none inside the window
  (entity row before the key's first row, or after its TTL ran out); `drop_like_file_store=True` does the same;
- it keeps one row of entity rows that share keys and timestamp (which one is not defined); this join keeps each.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FeatureService, FeatureStore, FeatureView
from feast.infra.offline_stores.file_source import FileSource

ENTITY_TIMESTAMP = "event_timestamp"
"""The entity frame's timestamp column, as Feast names it."""

_NULL_CREATED = np.iinfo(np.int64).min  # a null created timestamp sorts as the oldest, as Feast orders them


def service_views(store: FeatureStore, service: FeatureService | str) -> list[FeatureView]:
    """The feature views of a feature service, each restricted to the features the service selects."""
    if isinstance(service, str):
        service = store.get_feature_service(service)
    return [
        store.get_feature_view(p.name)[[f.name for f in p.features]] for p in service.feature_view_projections
    ]


def point_in_time_join(
    entity_df: pd.DataFrame,
    views: Sequence[FeatureView],
    store: FeatureStore,
    *,
    drop_like_file_store: bool = False,
) -> pd.DataFrame:
    """Entity rows in their given order with each view's point-in-time features appended (one row per entity row).

    The entity timestamp column comes back as UTC (naive values are taken as UTC), like Feast returns it. Integer
    features of a view come back as float64 with NaN when some entity row has no value, like Feast's. With
    `drop_like_file_store`, entity rows that Feast's file offline store drops are dropped too (see module doc).
    """
    ts_col = _entity_timestamp_column(entity_df)
    entity_ts = pd.to_datetime(entity_df[ts_col], utc=True)
    if entity_ts.isna().any():
        raise ValueError(f"entity_df has {int(entity_ts.isna().sum())} rows without a {ts_col!r}; drop or fill them first")
    out = {name: entity_df[name].array for name in entity_df.columns}  # .array keeps extension dtypes as given
    out[ts_col] = entity_ts.array
    ts_ns = entity_ts.dt.as_unit("ns").array.asi8
    keep = np.ones(len(entity_df), dtype=bool)
    for view in views:
        rows, stale = _match(entity_df, ts_ns, view, store)
        if drop_like_file_store:
            keep &= ~stale
        for name, values in _read_features(view, store, rows).items():
            if name in out:
                raise ValueError(
                    f"feature {name!r} of {view.name} is already a column of the result (an entity column or a "
                    "feature of an earlier view); rename it or request fewer features"
                )
            out[name] = values
    joined = pd.DataFrame(out, copy=False)
    return joined.loc[keep].reset_index(drop=True) if not keep.all() else joined


def _entity_timestamp_column(entity_df: pd.DataFrame) -> str:
    """`event_timestamp`, or the entity frame's only datetime column (Feast's rule)."""
    if ENTITY_TIMESTAMP in entity_df.columns:
        return ENTITY_TIMESTAMP
    stamps = entity_df.select_dtypes(include=["datetime", "datetimetz"]).columns
    if len(stamps) == 1:
        return str(stamps[0])
    raise ValueError(
        f"entity_df needs a column named {ENTITY_TIMESTAMP!r} holding each row's time (columns: {list(entity_df.columns)})"
    )


def _join_key(view: FeatureView) -> str:
    """The view's one join key (composite keys and renamed keys are not supported here)."""
    keys = [column.name for column in view.entity_columns]
    if len(keys) != 1 or view.projection.join_key_map:
        raise NotImplementedError(
            f"point_in_time_join supports views with one join key and no join-key mapping; {view.name} has "
            f"keys {keys} and mapping {view.projection.join_key_map}: use store.get_historical_features for it"
        )
    return keys[0]


def _source(view: FeatureView) -> FileSource:
    source = view.batch_source
    if not isinstance(source, FileSource):
        raise TypeError(f"{view.name} reads from {type(source).__name__}; point_in_time_join reads FileSource only")
    if source.field_mapping:
        raise NotImplementedError(
            f"{view.name}'s source renames columns ({source.field_mapping}); use store.get_historical_features for it"
        )
    return source


def _read(view: FeatureView, store: FeatureStore, columns: list[str]) -> pa.Table:
    """Only `columns` of the view's parquet source (a file or a folder of files, local or remote)."""
    source = _source(view)
    uri = FileSource.get_uri_for_file_path(repo_path=store.repo_path, uri=source.file_options.uri)
    filesystem, path = FileSource.create_filesystem_and_path(str(uri), source.file_options.s3_endpoint_override)
    return pq.read_table(path, columns=columns, filesystem=filesystem)


def _ns(column: pa.ChunkedArray, null: int = 0) -> np.ndarray:
    """Timestamps as int64 ns since the epoch, nulls as `null` (arrow keeps naive stamps as UTC wall time, which
    is how Feast reads them)."""
    ns = pc.cast(pc.cast(column, pa.timestamp("ns", tz=column.type.tz)), pa.int64())
    return pc.fill_null(ns, null).to_numpy()


def _match(
    entity_df: pd.DataFrame, entity_ts: np.ndarray, view: FeatureView, store: FeatureStore
) -> tuple[np.ndarray, np.ndarray]:
    """Per entity row: index of the matching source row (-1: none) and whether Feast's file store would drop it."""
    key = _join_key(view)
    if key not in entity_df.columns:
        raise ValueError(f"entity_df has no column {key!r}, the join key of {view.name}")
    source = _source(view)
    columns = [key, source.timestamp_field] + ([source.created_timestamp_column] if source.created_timestamp_column else [])
    table = _read(view, store, columns)
    usable = pc.and_(pc.is_valid(table[key]), pc.is_valid(table[source.timestamp_field]))
    row_ids = np.flatnonzero(usable.to_numpy(zero_copy_only=False))
    feature_ts = _ns(table[source.timestamp_field])[row_ids]
    created = _ns(table[source.created_timestamp_column], null=_NULL_CREATED)[row_ids] if len(columns) == 3 else None
    feature_keys = table[key].to_numpy()[row_ids]
    del table

    # One code per key and one dense rank per timestamp, over both sides: (key, time) then fits one int64, so a
    # single sort and a single binary search find, per entity row, the newest source row at or before its time.
    key_codes, uniques = pd.factorize(np.concatenate([feature_keys, entity_df[key].to_numpy()]))
    feature_codes, entity_codes = key_codes[: len(feature_keys)], key_codes[len(feature_keys) :]
    unique_ts, ts_rank = np.unique(np.concatenate([feature_ts, entity_ts]), return_inverse=True)
    composite = key_codes.astype(np.int64) * len(unique_ts) + ts_rank
    feature_composite, entity_composite = composite[: len(feature_keys)], composite[len(feature_keys) :]
    order = np.lexsort((created, feature_composite) if created is not None else (feature_composite,))
    position = np.searchsorted(feature_composite[order], entity_composite, side="right") - 1
    found = (position >= 0) & (entity_codes >= 0)
    found[found] = feature_codes[order[position[found]]] == entity_codes[found]
    if view.ttl and view.ttl.total_seconds() != 0:  # Feast's rule: a TTL of 0 means no lower bound
        lower = entity_ts - pd.Timedelta(view.ttl).value
        found[found] = feature_ts[order[position[found]]] >= lower[found]
    rows = np.full(len(entity_ts), -1, dtype=np.int64)
    rows[found] = row_ids[order[position[found]]]
    has_rows = np.bincount(feature_codes, minlength=len(uniques)) > 0
    stale = ~found & (entity_codes >= 0) & has_rows[np.maximum(entity_codes, 0)]
    return rows, stale


def _read_features(view: FeatureView, store: FeatureStore, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The view's projected features taken at `rows` (-1: null; integer columns then become float64, as pandas)."""
    names = [feature.name for feature in view.projection.features]
    table = _read(view, store, names)
    return {
        name: pd.api.extensions.take(table[name].to_numpy(), rows, allow_fill=True) for name in names
    }
