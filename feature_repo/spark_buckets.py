"""Buckets of rows shipped to Spark as pickled pandas frames: what `spark_validation` and `spark_tiles` share.

Both run a single-process function per bucket on the executors and need the frame exactly as the driver holds it
(raw columns mix ints, text and booleans that no Spark column type holds; nullable integers and nanosecond times
must not be retyped), so a bucket travels as one binary cell: (bucket number, pickled payload). `split` cuts the
rows by a bucket number per row, keeping each bucket's rows in their original order; `bucket_count` sizes the cut.
"""

from __future__ import annotations

import math

import numpy as np
from pyspark.sql import types as T

BUCKET = "_hl_bucket"
POSITION = "_hl_pos"
PAYLOAD = "_hl_payload"
PAYLOAD_SCHEMA = T.StructType([T.StructField(BUCKET, T.LongType()), T.StructField(PAYLOAD, T.BinaryType())])
"""One bucket as a Spark row: its number and its pickled payload."""


def bucket_count(rows: int, parallelism: int, least: int, most: int) -> int:
    """Buckets for `rows` rows: four per core, none smaller than `least` rows, none over `most` on average."""
    wanted = min(math.ceil(rows / least), max(4 * parallelism, 1))
    return max(1, wanted, math.ceil(rows / most))


def split(of_row: np.ndarray, buckets: int) -> list[tuple[int, np.ndarray]]:
    """(bucket, the positions of its rows in their original order) for every bucket that has rows."""
    order = np.argsort(of_row, kind="stable")
    cuts = np.searchsorted(of_row[order], np.arange(buckets + 1))
    return [(b, order[cuts[b]:cuts[b + 1]]) for b in range(buckets) if cuts[b + 1] > cuts[b]]
