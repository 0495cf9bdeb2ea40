"""Validation of one arrival day on Spark: `validate_arrivals` run per bucket of event ids, the same result frames.

Why a bucket gives the single-process verdicts. `validate_events` marks each row with the first rule it breaks.
Every rule but two reads the row alone: the contracts, the future limit and the watermark. (The contracts type a
field over all the rows of one contract at once, Int64 or float64 depending on its neighbours; no verdict depends
on which: every integer bound is at most 2^53 − 1, exact in a float, and an integer the float rounds is past it.
`tests/feature_repo/test_spark_validation.py` splits days with such values across buckets.) The two rules that
look across rows are about the event id, compared as text (`astype("string")`):
- a replay (`event_id.unique`): the id's text is among the ids accepted on earlier days (`seen_event_ids`);
- a duplicate within the day (`event_id.unique`): among the rows that broke no other rule, every copy of an id's
  text after the first, in raw order.
So each row goes to the bucket a hash of its id's text names (`pandas.util.hash_array`: the same in every process),
every copy of an id in one bucket, in raw order; a bucket is validated against the seen ids whose text hashes to
it (a seen value that is not text goes to every bucket: it matches no id's text, and sending it along keeps that
decision where it is made). A row without an id breaks `event_id.required`, the first rule checked, and so takes
part in neither cross-row rule: those rows are spread over the buckets by raw position.

Putting the day back together. Quarantined rows keep the raw order: every bucket row carries its raw position in
a column (`POSITION`), which quarantined rows keep (they are raw rows plus `rule` and `reason`); the buckets'
quarantined rows are ordered by it and the column dropped. Accepted rows are sorted by (ts, event_id)
(`contracts._typed`, stable) and their ids are unique: within a bucket by the duplicate rule, across buckets
because equal texts share a bucket. (That holds for ids held as text, in an object or string column, whose text
is the same before and after `_typed`'s cast to object; a day whose id column has another dtype, numbers or
times, is validated on the driver, single-process.) So that key orders the accepted rows totally, and the buckets'
accepted rows sorted by it once more are the single-process rows in their order. Rule counts are summed.

Transport. Raw rows are values as sent: one object column may hold ints, text and booleans side by side, which
get different verdicts (7 is a user id, "7" and True are not), and no Spark column type holds them. So a bucket
travels as a pickled pandas frame (its rows, columns and dtypes as on the driver) with its seen ids, and its
`ValidationResult` comes back the same way; the Python workers run the driver's interpreter and pandas
(`spark_session`), so they unpickle the same frames. An empty day, or one that lacks columns, is validated on the
driver too: there is nothing to spread, and the error is the single-process one.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession

from feature_repo import event_time, spark_buckets
from feature_repo.contracts import RAW_COLUMNS, ValidationResult
from feature_repo.event_time import Lateness
from feature_repo.spark_buckets import BUCKET, PAYLOAD, PAYLOAD_SCHEMA, POSITION

ROWS_PER_BUCKET = 25_000
"""Fewest raw rows worth a bucket of their own: a validation costs ~0.2 s of pandas overhead whatever its size."""
MAX_ROWS_PER_BUCKET = 250_000
"""Most raw rows of one bucket (its pickled frame, a few tens of MB, is one binary cell of a Spark row)."""


def bucket_count(rows: int, parallelism: int) -> int:
    """Buckets for a day of `rows` raw rows: four per core, none smaller than ROWS_PER_BUCKET, none over
    MAX_ROWS_PER_BUCKET."""
    return spark_buckets.bucket_count(rows, parallelism, ROWS_PER_BUCKET, MAX_ROWS_PER_BUCKET)


def _hash_bucket(text: np.ndarray, buckets: int) -> np.ndarray:
    """The bucket of each id text (an object array of str): a keyed hash, identical in every process."""
    return (pd.util.hash_array(text, categorize=False) % np.uint64(buckets)).astype(np.int64)


def ids_as_text(event_ids: pd.Series) -> bool:
    """Whether ids are held as text (an object or string column): their text is then the same before and after
    `contracts._typed` casts them, so accepted ids are unique as typed (module doc)."""
    return event_ids.dtype == object or pd.api.types.is_string_dtype(event_ids.dtype)


def row_buckets(event_ids: pd.Series, buckets: int) -> np.ndarray:
    """The bucket of each raw row: by the hash of its id's text, or by its position when it has no id."""
    text = event_ids.astype("string")  # as validate_events compares ids
    missing = text.isna().to_numpy()
    out = _hash_bucket(text.fillna("").to_numpy(dtype=object), buckets)
    out[missing] = np.flatnonzero(missing) % buckets
    return out


def seen_by_bucket(seen_event_ids: pd.Index | None, buckets: int) -> list[pd.Index | None]:
    """Each bucket's share of the earlier days' ids: text by its hash, anything else to every bucket."""
    if seen_event_ids is None:
        return [None] * buckets
    values = np.asarray(seen_event_ids, dtype=object)
    dtype = getattr(seen_event_ids, "dtype", object)
    if dtype != object and pd.api.types.is_string_dtype(dtype):  # a string Index: text, or missing
        is_text = ~pd.isna(values)
    else:
        is_text = np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=len(values))
    of_text = _hash_bucket(values[is_text], buckets) if is_text.any() else np.zeros(0, dtype=np.int64)
    texts, others = values[is_text], values[~is_text]
    order = np.argsort(of_text, kind="stable")
    cuts = np.searchsorted(of_text[order], np.arange(buckets + 1))
    return [
        pd.Index(np.concatenate([texts[order[cuts[b]:cuts[b + 1]]], others]), dtype=dtype) for b in range(buckets)
    ]


def validate_arrivals(
    spark: SparkSession, raw: pd.DataFrame, arrival_day: pd.Timestamp, lateness: Lateness,
    seen_event_ids: pd.Index | None, buckets: int | None = None,
) -> ValidationResult:
    """`event_time.validate_arrivals(raw, arrival_day, lateness, seen_event_ids)` computed per bucket on Spark."""
    if raw.empty or any(c not in raw.columns for c in RAW_COLUMNS) or not ids_as_text(raw["event_id"]):
        return event_time.validate_arrivals(raw, arrival_day, lateness, seen_event_ids)
    if POSITION in raw.columns:
        raise ValueError(f"raw events carry a column {POSITION!r}, which the Spark engine uses for the raw order: "
                         "rename it, or validate with HYPERLIFT_OFFLINE_ENGINE=pandas")
    raw = raw.reset_index(drop=True)
    buckets = buckets or bucket_count(len(raw), spark.sparkContext.defaultParallelism)
    seen = seen_by_bucket(seen_event_ids, buckets)
    cells = [  # rows grouped by bucket, in raw order inside each
        (b, bytearray(pickle.dumps((raw.iloc[rows].assign(**{POSITION: rows.astype(np.int64)}), seen[b]),
                                   protocol=pickle.HIGHEST_PROTOCOL)))
        for b, rows in spark_buckets.split(row_buckets(raw["event_id"], buckets), buckets)
    ]

    def run(cell: pd.DataFrame) -> pd.DataFrame:
        out = []
        for bucket, payload in zip(cell[BUCKET], cell[PAYLOAD]):
            part, bucket_seen = pickle.loads(payload)
            result = event_time.validate_arrivals(part, arrival_day, lateness, bucket_seen)
            done = (result.accepted, result.quarantined, result.rule_counts)
            out.append((int(bucket), pickle.dumps(done, protocol=pickle.HIGHEST_PROTOCOL)))
        return pd.DataFrame(out, columns=[BUCKET, PAYLOAD])

    frame = spark.createDataFrame(cells, schema=PAYLOAD_SCHEMA)  # a local list: no Arrow batch limit on the cells
    returned = frame.groupBy(BUCKET).applyInPandas(run, schema=PAYLOAD_SCHEMA).collect()
    parts = [pickle.loads(row[PAYLOAD]) for row in sorted(returned, key=lambda row: row[BUCKET])]
    return _merge([p[0] for p in parts], [p[1] for p in parts], [p[2] for p in parts])


def _key_order(accepted: pd.DataFrame) -> np.ndarray:
    """The row order of `accepted.sort_values(["ts", "event_id"])` for rows whose keys are unique: by time, then
    by id only among rows of one time (a sort of a million texts would take seconds; ties of time are few)."""
    ts = accepted["ts"].array.asi8
    order = np.argsort(ts, kind="stable")
    tied = np.zeros(len(order), dtype=bool)
    same = ts[order[1:]] == ts[order[:-1]]
    tied[1:] |= same
    tied[:-1] |= same
    if tied.any():  # rows sharing a time: their places in `order`, refilled in (ts, event_id) order
        rows = order[tied]
        keys = accepted.iloc[rows][["ts", "event_id"]].reset_index(drop=True)
        order[tied] = rows[keys.sort_values(["ts", "event_id"], kind="stable").index.to_numpy()]
    return order


def _merge(
    accepted: list[pd.DataFrame], quarantined: list[pd.DataFrame], counts: list[dict[str, int]]
) -> ValidationResult:
    """The buckets' results as one day's (module doc)."""
    kept = [frame for frame in accepted if len(frame)] or accepted[:1]
    day_accepted = pd.concat(kept, ignore_index=True) if len(kept) > 1 else kept[0]
    if day_accepted["event_id"].duplicated().any():  # cannot happen (module doc); the order would be undecided
        raise RuntimeError(
            "the Spark validation accepted one event id in two buckets, which the bucketing by id rules out: please "
            "report it with the day's raw file, and validate with HYPERLIFT_OFFLINE_ENGINE=pandas meanwhile"
        )
    day_accepted = day_accepted.take(_key_order(day_accepted)).reset_index(drop=True)
    held = [frame for frame in quarantined if len(frame)] or quarantined[:1]
    day_quarantined = pd.concat(held, ignore_index=True) if len(held) > 1 else held[0]
    day_quarantined = day_quarantined.sort_values(POSITION, kind="stable").drop(columns=POSITION)
    totals: dict[str, int] = {}
    for bucket_counts in counts:
        for rule, n in bucket_counts.items():
            totals[rule] = totals.get(rule, 0) + n
    return ValidationResult(day_accepted, day_quarantined.reset_index(drop=True), dict(sorted(totals.items())))
