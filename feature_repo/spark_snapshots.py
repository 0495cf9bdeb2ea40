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
from feature_repo.transforms import ACTIVITY_FEATURES, TILE_COLUMNS, snapshots_from_tiles

BUCKET = "_hl_bucket"
POSITION = "_hl_pos"


def _schema() -> T.StructType:
    """The rows `snapshots_from_tiles` returns, plus the bucket and the row's place inside it."""
    return T.StructType([
        T.StructField(BUCKET, T.LongType()), T.StructField(POSITION, T.LongType()),
        T.StructField("user_id", T.LongType()), T.StructField("event_timestamp_us", T.LongType()),
        *(T.StructField(name, T.FloatType()) for name in ACTIVITY_FEATURES),
    ])


def snapshots(
    spark: SparkSession, tiles: pd.DataFrame, user_ids: np.ndarray, stamps: pd.DatetimeIndex, buckets: int | None = None
) -> pd.DataFrame:
    """`transforms.snapshots_from_tiles(tiles, user_ids, stamps)` computed on Spark (folds are not taken here)."""
    stamps = pd.DatetimeIndex(stamps).tz_convert("UTC")
    user_ids = np.asarray(user_ids, dtype=np.int64)
    if len(user_ids) == 0 or len(stamps) == 0:
        return snapshots_from_tiles(tiles, user_ids, stamps)
    buckets = buckets or max(1, min(len(user_ids), 4 * spark.sparkContext.defaultParallelism))
    bucket_of_user = np.minimum(np.arange(len(user_ids)) * buckets // len(user_ids), buckets - 1)
    users = pd.DataFrame({BUCKET: bucket_of_user, POSITION: np.arange(len(user_ids)), "user_id": user_ids})
    tile_bucket = pd.Series(bucket_of_user, index=user_ids)
    known = tiles["user_id"].isin(tile_bucket.index)  # tiles of users not asked for change no asked-for row
    tiles = tiles.loc[known, list(TILE_COLUMNS)].astype(np.int64)
    tiles = tiles.assign(**{BUCKET: tile_bucket.loc[tiles["user_id"]].to_numpy()})
    stamp_values = stamps.as_unit("ns")

    def run(users_part: pd.DataFrame, tiles_part: pd.DataFrame) -> pd.DataFrame:
        users_part = users_part.sort_values(POSITION)
        if tiles_part.empty:  # a bucket of users without tiles: Spark hands an empty frame without columns
            tiles_part = pd.DataFrame({c: pd.Series(dtype=np.int64) for c in TILE_COLUMNS})
        rows = snapshots_from_tiles(tiles_part[list(TILE_COLUMNS)], users_part["user_id"].to_numpy(), stamp_values)
        return pd.DataFrame({
            BUCKET: np.int64(users_part[BUCKET].iloc[0]), POSITION: np.arange(len(rows), dtype=np.int64),
            "user_id": rows["user_id"], "event_timestamp_us": rows["event_timestamp"].dt.as_unit("us").array.asi8,
            **{name: rows[name] for name in ACTIVITY_FEATURES},
        })

    longs = lambda names: T.StructType([T.StructField(n, T.LongType()) for n in names])  # noqa: E731
    left = spark.createDataFrame(users, schema=longs(users.columns)).groupBy(BUCKET)
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
    spark: SparkSession, tiles: pd.DataFrame, user_ids: np.ndarray, arrival_day: pd.Timestamp, lateness: Lateness
) -> dict[pd.Timestamp, pd.DataFrame]:
    """`event_time.partition_snapshots` on Spark: the snapshot files arrival day P (re)writes, by stamp."""
    rows = snapshots(spark, tiles, user_ids, lateness.revised_stamps(arrival_day))
    return {stamp: part.reset_index(drop=True) for stamp, part in rows.groupby("event_timestamp", sort=True)}
