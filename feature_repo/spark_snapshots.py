"""Activity snapshots on Spark: `snapshots_from_tiles` run per bucket of users on the executors, bit for bit.

A user's snapshot depends on that user's tiles only (docs/data-plane.md, *Exact tiles, deterministic features*:
days before a user's first event leave the decayed accumulators at exactly 0.0), so the users are cut into
contiguous buckets, each bucket's tiles go with it (a cogroup by bucket: one shuffle of the tiles), and every bucket
runs the single-process function itself. The rows come back in the single-process order (users as given, stamps
within each user), with the same dtypes, so the result is the same frame, not merely close values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from feature_repo.event_time import Lateness
from feature_repo.spark_buckets import BUCKET, POSITION
from feature_repo.transforms import (
    ACTIVITY_FEATURES, FOLD_COLUMNS, FOLD_DAY, FOLD_DECAYED, FOLD_DTYPES, TILE_COLUMNS, empty_folds,
    snapshots_from_tiles,
)


def _schema() -> T.StructType:
    """The rows `snapshots_from_tiles` returns, plus the bucket and the row's place inside it."""
    return T.StructType([
        T.StructField(BUCKET, T.LongType()), T.StructField(POSITION, T.LongType()),
        T.StructField("user_id", T.LongType()), T.StructField("event_timestamp_us", T.LongType()),
        *(T.StructField(name, T.FloatType()) for name in ACTIVITY_FEATURES),
    ])


def snapshots(
    spark: SparkSession, tiles: pd.DataFrame, user_ids: np.ndarray, stamps: pd.DatetimeIndex, buckets: int | None = None,
    folds: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """`transforms.snapshots_from_tiles(tiles, user_ids, stamps, folds)` computed on Spark.

    A user's fold (at most one) travels with the user, on the users' side of the cogroup: its integer columns as
    longs, its decayed accumulators as doubles (float64 both ways, exact), `fold_day` -1 for a user without one."""
    stamps = pd.DatetimeIndex(stamps).tz_convert("UTC")
    user_ids = np.asarray(user_ids, dtype=np.int64)
    if len(user_ids) == 0 or len(stamps) == 0:
        return snapshots_from_tiles(tiles, user_ids, stamps, folds)
    buckets = buckets or max(1, min(len(user_ids), 4 * spark.sparkContext.defaultParallelism))
    bucket_of_user = np.minimum(np.arange(len(user_ids)) * buckets // len(user_ids), buckets - 1)
    users = pd.DataFrame({BUCKET: bucket_of_user, POSITION: np.arange(len(user_ids)), "user_id": user_ids})
    users = _with_folds(users, empty_folds() if folds is None else folds)
    tile_bucket = pd.Series(bucket_of_user, index=user_ids)
    known = tiles["user_id"].isin(tile_bucket.index)  # tiles of users not asked for change no asked-for row
    tiles = tiles.loc[known, list(TILE_COLUMNS)].astype(np.int64)
    tiles = tiles.assign(**{BUCKET: tile_bucket.loc[tiles["user_id"]].to_numpy()})
    stamp_values = stamps.as_unit("ns")

    def run(users_part: pd.DataFrame, tiles_part: pd.DataFrame) -> pd.DataFrame:
        users_part = users_part.sort_values(POSITION)
        if tiles_part.empty:  # a bucket of users without tiles: Spark hands an empty frame without columns
            tiles_part = pd.DataFrame({c: pd.Series(dtype=np.int64) for c in TILE_COLUMNS})
        held = users_part.loc[users_part[FOLD_DAY] >= 0, list(FOLD_COLUMNS)].astype(FOLD_DTYPES)
        rows = snapshots_from_tiles(tiles_part[list(TILE_COLUMNS)], users_part["user_id"].to_numpy(), stamp_values,
                                    held.reset_index(drop=True))
        return pd.DataFrame({
            BUCKET: np.int64(users_part[BUCKET].iloc[0]), POSITION: np.arange(len(rows), dtype=np.int64),
            "user_id": rows["user_id"], "event_timestamp_us": rows["event_timestamp"].dt.as_unit("us").array.asi8,
            **{name: rows[name] for name in ACTIVITY_FEATURES},
        })

    longs = lambda names: T.StructType([T.StructField(n, T.LongType()) for n in names])  # noqa: E731
    user_schema = T.StructType([T.StructField(n, T.DoubleType() if n in FOLD_DECAYED else T.LongType())
                                for n in users.columns])
    left = spark.createDataFrame(users, schema=user_schema).groupBy(BUCKET)
    right = spark.createDataFrame(tiles, schema=longs(tiles.columns)).groupBy(BUCKET)  # typed: tiles may be empty
    table = left.cogroup(right).applyInPandas(run, schema=_schema()).toArrow()
    order = np.lexsort((table[POSITION].to_numpy(), table[BUCKET].to_numpy()))
    frame = table.take(order).to_pandas()
    out = pd.DataFrame({"user_id": frame["user_id"].to_numpy(np.int64)})
    stamps_us = pd.to_datetime(frame["event_timestamp_us"].to_numpy(), unit="us", utc=True)
    out["event_timestamp"] = stamps_us.as_unit(stamps.unit)  # the unit the caller's stamps have, as single-process
    for name in ACTIVITY_FEATURES:
        out[name] = frame[name].to_numpy(np.float32)
    return out



def partition_snapshots(
    spark: SparkSession, tiles: pd.DataFrame, user_ids: np.ndarray, arrival_day: pd.Timestamp, lateness: Lateness,
    folds: pd.DataFrame | None = None,
) -> dict[pd.Timestamp, pd.DataFrame]:
    """`event_time.partition_snapshots` on Spark: the snapshot files arrival day P (re)writes, by stamp."""
    rows = snapshots(spark, tiles, user_ids, lateness.revised_stamps(arrival_day), folds=folds)
    return {stamp: part.reset_index(drop=True) for stamp, part in rows.groupby("event_timestamp", sort=True)}


def _with_folds(users: pd.DataFrame, folds: pd.DataFrame) -> pd.DataFrame:
    """The users frame with each user's fold columns (none: `fold_day` -1, zeros); folds of other users dropped."""
    if folds["user_id"].duplicated().any():
        raise ValueError("more than one fold for a user: keep one running tile per user (fold_tiles merges them)")
    joined = users.merge(folds[list(FOLD_COLUMNS)], on="user_id", how="left", sort=False)
    for column in FOLD_COLUMNS[1:]:
        fill = -1 if column == FOLD_DAY else 0
        joined[column] = joined[column].fillna(fill).astype(FOLD_DTYPES[column])
    return joined
