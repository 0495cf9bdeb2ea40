"""A day's activity tiles on Spark: `transforms.event_tiles` run per bucket of users on the executors, the same frame.

A tile is keyed by (user, event day) and made of that user's events only (sums and maxima of their contributions),
so the users are cut into contiguous ranges of ids, each range's events go to one bucket, and every bucket runs
the single-process `event_tiles` itself. Buckets hold disjoint, increasing user ranges and each returns its tiles
sorted by (user, day), so the buckets' rows in bucket order are the single-process rows in its order (sorted by
key); every column is int64 there and comes back as Spark LongType, exactly.

Transport: a bucket's events travel as a pickled pandas frame (every column and dtype as on the driver), so the
executors see the frame the single-process function would see, whatever the events' dtypes (nullable integers,
nanosecond times, text). The user of an event is read as `event_contributions` reads it (`to_numpy(int64)`): a
missing user raises the same error as single-process. An empty frame is tiled on the driver.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from feature_repo import spark_buckets, transforms
from feature_repo.spark_buckets import BUCKET, PAYLOAD, PAYLOAD_SCHEMA, POSITION
from feature_repo.transforms import TILE_COLUMNS

EVENTS_PER_BUCKET = 50_000
"""Fewest events worth a bucket of their own (a bucket's pandas work has a fixed cost of a few milliseconds)."""
MAX_EVENTS_PER_BUCKET = 500_000
"""Most events of one bucket (its pickled frame is one binary cell of a Spark row)."""

_OUTPUT = T.StructType([T.StructField(c, T.LongType()) for c in (BUCKET, POSITION, *TILE_COLUMNS)])


def bucket_count(events: int, users: int, parallelism: int) -> int:
    """Buckets for `events` events of `users` users: four per core, none under EVENTS_PER_BUCKET events, none over
    MAX_EVENTS_PER_BUCKET on average, never more than there are users."""
    return min(spark_buckets.bucket_count(events, parallelism, EVENTS_PER_BUCKET, MAX_EVENTS_PER_BUCKET), users)


def event_tiles(spark: SparkSession, events: pd.DataFrame, buckets: int | None = None) -> pd.DataFrame:
    """`transforms.event_tiles(events)` computed per bucket of users on Spark."""
    if events.empty:
        return transforms.event_tiles(events)
    user_of_event = events["user_id"].to_numpy(dtype=np.int64)  # as event_contributions reads it (and fails)
    users, user_index = np.unique(user_of_event, return_inverse=True)
    buckets = min(buckets or bucket_count(len(events), len(users), spark.sparkContext.defaultParallelism), len(users))
    of_event = (user_index.astype(np.int64) * buckets) // len(users)  # contiguous, increasing ranges of user ids
    cells = [(b, bytearray(pickle.dumps(events.iloc[rows], protocol=pickle.HIGHEST_PROTOCOL)))
             for b, rows in spark_buckets.split(of_event, buckets)]

    def run(cell: pd.DataFrame) -> pd.DataFrame:
        out = []
        for bucket, payload in zip(cell[BUCKET], cell[PAYLOAD]):
            tiles = transforms.event_tiles(pickle.loads(payload))
            out.append(pd.DataFrame({BUCKET: np.full(len(tiles), bucket, dtype=np.int64),
                                     POSITION: np.arange(len(tiles), dtype=np.int64),
                                     **{c: tiles[c].to_numpy(np.int64) for c in TILE_COLUMNS}}))
        return pd.concat(out, ignore_index=True) if out else pd.DataFrame({c: [] for c in _OUTPUT.names})

    frame = spark.createDataFrame(cells, schema=PAYLOAD_SCHEMA)  # a local list: no Arrow batch limit on the cells
    table = frame.groupBy(BUCKET).applyInPandas(run, schema=_OUTPUT).toArrow()
    order = np.lexsort((table[POSITION].to_numpy(), table[BUCKET].to_numpy()))
    rows = table.take(order)
    return pd.DataFrame({c: rows[c].to_numpy().astype(np.int64) for c in TILE_COLUMNS})
