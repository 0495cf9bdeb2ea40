"""The project's point-in-time join on Spark: the same rows and values as `feature_repo.point_in_time`, any size.

Semantics are `point_in_time.py`'s, rule for rule: per entity row and view, the newest source row of the same key
with feature_ts <= entity_ts and, when the view has a TTL, feature_ts >= entity_ts - TTL; equal feature times are
ordered by the created timestamp (nulls oldest), then by file order (files by path, rows by position: the order
pyarrow reads a folder in), the last one wins; features are null when no row qualifies; `drop_like_file_store`
drops what Feast's file offline store drops. Times are compared as int64 nanoseconds on both sides (the session
reads parquet TIMESTAMP(NANOS) as int64, feature_repo/spark_session.py), so no sub-microsecond tie is lost.

How: one as-of join per view as a window, not a range join. The entity rows (row number, key, time) and the source
rows (key, time, created, file, position, features) are put in one frame, partitioned by key and ordered by
(time, source rows before entity rows, created, file, position); for each entity row the last source row so far
is its match. One shuffle by key and one sort per view, whatever the number of rows per key (a range join on
`feature_ts <= entity_ts` multiplies rows for views without a TTL).

`as_of_join` works on Spark DataFrames end to end (entity rows already in Spark); `point_in_time_join` takes and
returns pandas frames like the single-process join, with the entity columns passed through untouched and the feature
columns given the dtypes the single-process join gives them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from feast import FeatureStore, FeatureView
from feast.infra.offline_stores.file_source import FileSource
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from feature_repo.point_in_time import _entity_timestamp_column, _join_key

ROW = "_hl_row"
KEY = "_hl_key"
TS = "_hl_ts"
LONG_MIN = -(2**63)


@dataclass(frozen=True)
class SourceRows:
    """A view's source as Spark reads it: the frame, and the names of its key, time and created columns."""

    frame: DataFrame
    key: str
    timestamp: str
    created: str | None


def source_path(view: FeatureView, store: FeatureStore) -> str:
    """The parquet file or folder a view reads: a FileSource's path, or a SparkSource's (Feast's Spark store)."""
    source = view.batch_source
    if source.field_mapping:
        raise NotImplementedError(
            f"{view.name}'s source renames columns ({source.field_mapping}); use store.get_historical_features for it"
        )
    if isinstance(source, FileSource):
        uri = FileSource.get_uri_for_file_path(repo_path=store.repo_path, uri=source.file_options.uri)
        return str(uri)
    path = getattr(source, "path", None)
    if type(source).__name__ == "SparkSource" and path and (getattr(source, "file_format", None) or "parquet") == "parquet":
        return str(path)
    raise TypeError(
        f"{view.name} reads from {type(source).__name__}; the Spark join reads parquet FileSources and SparkSources "
        "with a path"
    )


def read_source(spark: SparkSession, view: FeatureView, store: FeatureStore, features: Sequence[str]) -> SourceRows:
    """The view's parquet rows with `features`, its time and created time as int64 ns, and each row's file order."""
    source = view.batch_source
    key = _join_key(view)
    raw = spark.read.parquet(source_path(view, store))
    created = source.created_timestamp_column or None
    columns = [
        F.col(key), nanos(raw, source.timestamp_field).alias("_hl_fts"),
        (F.coalesce(nanos(raw, created), F.lit(LONG_MIN)) if created else F.lit(LONG_MIN)).alias("_hl_created"),
        F.col("_metadata.file_path").alias("_hl_file"), F.col("_metadata.row_index").alias("_hl_pos"),
        *(F.col(name) for name in features),
    ]
    return SourceRows(raw.select(*columns), key, source.timestamp_field, created)


def nanos(frame: DataFrame, name: str) -> Column:
    """A time column as int64 ns since the epoch: parquet NANOS arrive as int64 already; TIMESTAMP (µs) and
    TIMESTAMP_NTZ (taken as UTC wall time, as pyarrow and Feast read naive stamps) are scaled."""
    data_type = frame.schema[name].dataType
    if isinstance(data_type, T.LongType):
        return F.col(name)
    if isinstance(data_type, T.TimestampType):
        return F.unix_micros(F.col(name)) * F.lit(1000)
    if isinstance(data_type, T.TimestampNTZType):
        return F.unix_micros(F.col(name).cast(T.TimestampType())) * F.lit(1000)  # session time zone is UTC
    raise TypeError(f"column {name!r} is {data_type.simpleString()}, not a timestamp; Feast sources need one")


def view_match(entity: DataFrame, view: FeatureView, store: FeatureStore, index: int) -> DataFrame:
    """Per entity row (`_hl_row`, `_hl_key`, `_hl_ts` ns): the view's features at its time, and `_hl_stale_<index>`
    (Feast's file store would drop the row: the key has source rows, none inside the window)."""
    spark = entity.sparkSession
    names = [feature.name for feature in view.projection.features]
    source = read_source(spark, view, store, names)
    key_type = entity.schema[KEY].dataType
    rows = source.frame.where(F.col(source.key).isNotNull() & F.col("_hl_fts").isNotNull()).select(
        F.col(source.key).cast(key_type).alias(KEY), F.col("_hl_fts").alias(TS), F.lit(0).alias("_hl_kind"),
        "_hl_created", "_hl_file", "_hl_pos", F.struct(*names).alias("_hl_features"),
        F.lit(None).cast(T.LongType()).alias(ROW),
    )
    probes = entity.select(
        KEY, TS, F.lit(1).alias("_hl_kind"), F.lit(None).cast(T.LongType()).alias("_hl_created"),
        F.lit(None).cast(T.StringType()).alias("_hl_file"), F.lit(None).cast(T.LongType()).alias("_hl_pos"),
        F.lit(None).cast(rows.schema["_hl_features"].dataType).alias("_hl_features"), ROW,
    )
    # At equal times source rows sort before entity rows (feature_ts <= entity_ts); among source rows the newest
    # created, then the last in file order, comes last: `last(..., ignorenulls)` over the running frame picks it.
    ordered = Window.partitionBy(KEY).orderBy(TS, "_hl_kind", "_hl_created", "_hl_file", "_hl_pos")
    so_far = ordered.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    whole = ordered.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    is_row = F.col("_hl_kind") == 0
    both = rows.unionByName(probes).select(
        ROW, TS, F.col("_hl_kind"),
        F.last(F.when(is_row, F.struct(F.col(TS).alias("fts"), "_hl_features")), ignorenulls=True).over(so_far).alias("_hl_m"),
        F.max(is_row.cast("int")).over(whole).alias("_hl_has_rows"),
    ).where(F.col("_hl_kind") == 1)
    found = F.col("_hl_m").isNotNull()
    ttl = view.ttl
    if ttl and ttl.total_seconds() != 0:  # Feast's rule: a TTL of 0 means no lower bound
        found = found & (F.col("_hl_m.fts") >= F.col(TS) - F.lit(pd.Timedelta(ttl).value))
    stale = ~found & (F.col("_hl_has_rows") == 1)
    return both.select(
        ROW, stale.alias(f"_hl_stale_{index}"), found.alias(f"_hl_found_{index}"),
        *(F.when(found, F.col(f"_hl_m._hl_features.{name}")).alias(name) for name in names),
    )


def as_of_join(entity: DataFrame, views: Sequence[FeatureView], store: FeatureStore) -> DataFrame:
    """`entity` (`_hl_row` unique, `_hl_key`, `_hl_ts` as int64 ns) with every view's features and stale flags."""
    joined = entity.select(ROW)
    for index, view in enumerate(views):
        joined = joined.join(view_match(entity, view, store, index), on=ROW, how="left")
    return joined


def point_in_time_join(
    entity_df: pd.DataFrame,
    views: Sequence[FeatureView],
    store: FeatureStore,
    spark: SparkSession,
    *,
    drop_like_file_store: bool = False,
) -> pd.DataFrame:
    """`feature_repo.point_in_time.point_in_time_join` computed on Spark: same rows, order, columns, dtypes, values."""
    ts_col = _entity_timestamp_column(entity_df)
    entity_ts = pd.to_datetime(entity_df[ts_col], utc=True)
    if entity_ts.isna().any():
        raise ValueError(f"entity_df has {int(entity_ts.isna().sum())} rows without a {ts_col!r}; drop or fill them first")
    keys = {_join_key(view) for view in views}
    if len(keys) > 1:
        raise NotImplementedError(f"the Spark join takes views of one join key; these have {sorted(keys)}")
    out = {name: entity_df[name].array for name in entity_df.columns}
    out[ts_col] = entity_ts.array
    if not views:
        return pd.DataFrame(out, copy=False)
    (key,) = keys
    if key not in entity_df.columns:
        raise ValueError(f"entity_df has no column {key!r}, the join key of {views[0].name}")
    for view in views:
        for feature in view.projection.features:
            if feature.name in out:
                raise ValueError(
                    f"feature {feature.name!r} of {view.name} is already a column of the result (an entity column or "
                    "a feature of an earlier view); rename it or request fewer features"
                )
            out[feature.name] = None
    probes = pd.DataFrame(  # .array keeps nullable dtypes (Int64): their NAs reach Spark as nulls
        {ROW: np.arange(len(entity_df), dtype=np.int64), KEY: entity_df[key].array,
         TS: entity_ts.dt.as_unit("ns").array.asi8}
    )
    entity = spark.createDataFrame(probes)
    keep = np.ones(len(entity_df), dtype=bool)
    for index, view in enumerate(views):
        # One job per view, collected and put in entity order here (an argsort of row numbers) rather than joined
        # and sorted in Spark: the pandas frame is assembled on the driver anyway, and a join costs a shuffle.
        table = view_match(entity, view, store, index).toArrow()
        table = table.take(pa.array(np.argsort(table[ROW].to_numpy(), kind="stable")))
        if not np.array_equal(table[ROW].to_numpy(), np.arange(len(entity_df))):
            raise RuntimeError(f"the Spark join lost or repeated entity rows of {view.name}; this is a bug")
        if drop_like_file_store:
            keep &= ~table[f"_hl_stale_{index}"].to_numpy(zero_copy_only=False).astype(bool)
        matched = table[f"_hl_found_{index}"].to_numpy(zero_copy_only=False).astype(bool)
        names = [feature.name for feature in view.projection.features]
        nulls_in_source = source_nulls(spark, view, store, [n for n in names if _exact(table.schema.field(n).type)])
        for name in names:
            out[name] = pandas_take_values(table[name], matched, nulls_in_source.get(name, False))
    joined = pd.DataFrame(out, copy=False)
    return joined.loc[keep].reset_index(drop=True) if not keep.all() else joined


def _exact(data_type: pa.DataType) -> bool:
    """Integer and boolean columns: numpy holds their nulls only by changing dtype (float64, object)."""
    return pa.types.is_integer(data_type) or pa.types.is_boolean(data_type)


def source_nulls(spark: SparkSession, view: FeatureView, store: FeatureStore, names: list[str]) -> dict[str, bool]:
    """Which of `names` hold a null anywhere in the view's source. The single-process join reads the whole column
    into numpy, where an integer column with a null is float64 (a boolean one, object) even when no entity row meets
    the null; this mirrors it. Read from the parquet footers' statistics; a file without them is counted by Spark."""
    if not names:
        return {}
    import pyarrow.dataset as ds

    path = source_path(view, store)
    found = dict.fromkeys(names, False)
    try:
        dataset = ds.dataset(path.removeprefix("file://"), format="parquet")
        for fragment in dataset.get_fragments():
            meta = fragment.metadata
            columns = {meta.schema.column(c).name: c for c in range(meta.num_columns)}
            for group in range(meta.num_row_groups):
                for name in names:
                    stats = meta.row_group(group).column(columns[name]).statistics
                    if stats is None or not stats.has_null_count:
                        raise LookupError(name)
                    found[name] |= stats.null_count > 0
        return found
    except (LookupError, OSError, KeyError):  # no statistics, or not a path pyarrow opens: count with Spark
        raw = spark.read.parquet(path)
        counts = raw.select(*(F.sum(F.col(name).isNull().cast("long")).alias(name) for name in names)).first()
        return {name: bool(counts[name]) for name in names}


def pandas_take_values(column: pa.ChunkedArray, matched: np.ndarray, nulls_in_source: bool) -> np.ndarray:
    """Values with the dtype `pandas.api.extensions.take(<source column>.to_numpy(), rows, allow_fill=True)` gives:
    integers stay int64 only when every row matched and the source has no null (else float64 with NaN), booleans
    likewise (else object), floats keep their width with NaN, other types are objects with NaN where unmatched."""
    values = column.to_numpy(zero_copy_only=False)
    kind = column.type
    if pa.types.is_floating(kind):
        return values
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        if matched.all() and not nulls_in_source and column.null_count == 0:
            return values
        if pa.types.is_integer(kind):
            return column.cast(pa.float64()).to_numpy(zero_copy_only=False)
        values = np.asarray(column.to_pylist(), dtype=object)
    else:
        values = np.asarray(values, dtype=object)
    values = values.copy()
    values[~matched] = np.nan
    return values
