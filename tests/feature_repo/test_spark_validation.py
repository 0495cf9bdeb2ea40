"""Validation of an arrival day on Spark equals `validate_arrivals`: the same accepted and quarantined frames (rows,
order, columns, dtypes, values) and rule counts, however the day is cut into buckets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feature_repo.contracts import RAW_COLUMNS, ValidationResult
from feature_repo.event_time import DAY, Lateness, validate_arrivals
from feature_repo.offline_engine import validate_day
from infra.settings import HyperliftSettings
from tests.feature_repo.factories import START, event, exposure, frame, purchase
from tests.feature_repo.spark_support import SPARK_TEST_MASTER, spark  # noqa: F401  (the session fixture)
from tests.feature_repo.test_record_validation import KINDS

pytestmark = pytest.mark.spark

ARRIVAL = START + 3 * DAY
LATENESS = Lateness(2)
ON_TIME = ARRIVAL + pd.Timedelta(hours=3)
PANDAS = HyperliftSettings(offline_engine="pandas", spark_master=SPARK_TEST_MASTER)
SPARK = HyperliftSettings(offline_engine="spark", spark_master=SPARK_TEST_MASTER)


def assert_same(actual: ValidationResult, expected: ValidationResult, raw: pd.DataFrame) -> None:
    """Exactly the single-process result, and rows in = accepted + quarantined."""
    pd.testing.assert_frame_equal(actual.accepted, expected.accepted, check_exact=True, obj="accepted")
    pd.testing.assert_frame_equal(actual.quarantined, expected.quarantined, check_exact=True, obj="quarantined")
    assert actual.rule_counts == expected.rule_counts
    assert list(actual.rule_counts) == list(expected.rule_counts)
    assert len(raw) == actual.n_in == len(actual.accepted) + len(actual.quarantined)
    assert sum(actual.rule_counts.values()) == len(actual.quarantined)


def both(spark, raw: pd.DataFrame, seen: pd.Index | None, buckets: tuple[int, ...] = (1, 3, 7)) -> ValidationResult:
    """The single-process result, after checking the Spark engine (and Spark cut into `buckets`) against it."""
    from feature_repo.spark_validation import validate_arrivals as spark_validate

    expected = validate_arrivals(raw, ARRIVAL, LATENESS, seen)
    assert_same(validate_day(raw, ARRIVAL, LATENESS, seen, SPARK), expected, raw)
    pd.testing.assert_frame_equal(validate_day(raw, ARRIVAL, LATENESS, seen, PANDAS).accepted, expected.accepted)
    for n in buckets:
        assert_same(spark_validate(spark, raw, ARRIVAL, LATENESS, seen, buckets=n), expected, raw)
    return expected


def mixed_day() -> tuple[pd.DataFrame, pd.Index]:
    """A day with clean rows, every contract rule broken, duplicates, replays, missing ids, late and future rows."""
    ts = lambda hours: ON_TIME + pd.Timedelta(hours=hours)  # noqa: E731
    broken = [
        event(event_type="pageview_v0"), event(event_version=2), event(user_id=None), event(user_id=-4),
        event(user_id=2**53), event(item_id=None), event(item_id=-1), event(category_id=8), event(category_id=None),
        event(price=0.0), event(price=2e6), event(price=None), event(device="tv"), event(region="mars"),
        event(session_id=None), event(ts=None), event(event_type=None), event(event_version=None),
        purchase(revenue=-1.0), purchase(revenue=None), purchase(revenue=2e6),
        exposure(propensity=0.0), exposure(propensity=1.5), exposure(propensity=None), exposure(action_id=None),
        exposure(surface=None),
    ]
    rows = []
    for i, row in enumerate(broken):
        rows.append({**row, "event_id": f"bad{i}", "ts": row["ts"] if row["ts"] is None else ts(i % 5)})
    rows += [event(event_id=f"ok{i}", user_id=i % 17, ts=ts(i % 11), price=1.0 + i) for i in range(60)]
    rows += [purchase(event_id=f"buy{i}", ts=ts(i % 3)) for i in range(10)]
    rows += [exposure(event_id=f"exp{i}", ts=ts(0), propensity=1.0) for i in range(10)]  # same ts: order by id
    rows += [
        event(event_id=None, ts=ts(1)), event(event_id=None, ts=ts(2), user_id=-1), event(event_id=np.nan, ts=ts(3)),
        # duplicates within the day: the first valid copy wins, an invalid first copy shadows nothing
        event(event_id="dup", ts=ts(4), price=1.0), event(event_id="dup", ts=ts(5), price=2.0),
        event(event_id="dup", ts=ts(6), device="tv"),
        event(event_id="late-first", ts=ts(1), price=-5.0), event(event_id="late-first", ts=ts(2), price=5.0),
        event(event_id="late-first", ts=ts(3), price=6.0),
        # replays of ids accepted on earlier days (valid and invalid copies)
        event(event_id="old1", ts=ts(1)), event(event_id="old2", ts=ts(2), user_id=None), event(event_id="old1"),
        # the watermark (P − 2 days) and the future limit (P + 1 day + 5 min)
        event(event_id="beyond", ts=ARRIVAL - 2 * DAY - pd.Timedelta(microseconds=1)),
        event(event_id="at-mark", ts=ARRIVAL - 2 * DAY),
        event(event_id="future", ts=ARRIVAL + DAY + pd.Timedelta(minutes=5, microseconds=1)),
        event(event_id="just-in", ts=ARRIVAL + DAY + pd.Timedelta(minutes=5)),
        event(event_id="beyond", ts=ts(1)),  # a late first copy does not shadow a later valid one
    ]
    order = np.random.default_rng(3).permutation(len(rows))
    raw = frame([rows[i] for i in order])
    seen = pd.Index(["old1", "old2", "never-here", "ok-not"], dtype="string")
    return raw, seen


def test_a_day_of_every_verdict_on_spark_equals_single_process(spark):
    raw, seen = mixed_day()
    expected = both(spark, raw, seen)
    rules = set(expected.rule_counts)
    assert {"event_id.required", "event_id.unique", "ts.beyond_watermark", "ts.not_future", "ts.required",
            "price.range", "propensity.range", "user_id.range", "device.allowed"} <= rules
    reasons = set(expected.quarantined["reason"])
    assert {"duplicate event_id", "duplicate of an event accepted earlier"} <= reasons
    assert len(expected.accepted) > 60 and len(expected.quarantined) > 30


def test_without_seen_ids_and_with_seen_ids_that_are_not_text(spark):
    raw, _ = mixed_day()
    both(spark, raw, None, buckets=(5,))
    both(spark, raw, pd.Index([], dtype="string"), buckets=(5,))
    both(spark, raw, pd.Index(["old1", 7, None, "dup"], dtype=object), buckets=(5,))


def test_a_clean_day_an_empty_day_and_a_day_all_quarantined(spark):
    clean = frame([event(event_id=f"e{i}", user_id=i, ts=ON_TIME + pd.Timedelta(minutes=i)) for i in range(40)])
    assert both(spark, clean, pd.Index([], dtype="string")).quarantined.empty
    empty = frame([])
    assert both(spark, empty, pd.Index(["x"], dtype="string"), buckets=(3,)).n_in == 0
    bad = frame([event(event_id=f"e{i}", user_id=-1, ts=ON_TIME) for i in range(20)] + [event(event_id=None)] * 5)
    assert both(spark, bad, pd.Index(["e1"], dtype="string")).accepted.empty


AWKWARD = [None, True, False, 0, 1, 7, -3, 12, 7.0, 1.5, float("nan"), float("inf"), 2**53 - 1, 2**53 + 1, 2**63,
           10**400, -(10**400), 1e300, 9.2e12, 1_000_000.0, np.int64(4), np.float64(2.0), "", "x", "12", " 7 ", "1e3",
           "nan", "-1", "0.5", "mobile", "north", "page_view", "purchase", "2026-10-04T05:00:00Z",
           "2026-10-04 05:00:00", "2026-10-01T00:00:00+00:00", "not a time"]


def test_values_as_sent_give_the_same_verdicts_in_any_bucket(spark):
    """Object columns mixing ints, floats, text and booleans (the streaming path's frames): a field is typed over the
    rows of a contract at once (Int64 or float64 by its neighbours), so these rows are cut across buckets."""
    rng = np.random.default_rng(11)
    rows = []
    for i in range(600):
        kind = sorted(KINDS)[rng.integers(len(KINDS))]
        row = event(event_id=f"e{rng.integers(0, 300)}", event_type=kind,
                    ts=(ON_TIME + pd.Timedelta(minutes=int(rng.integers(0, 3000)))).isoformat(), **KINDS[kind])
        for name in rng.choice(RAW_COLUMNS, size=rng.integers(0, 3), replace=False):
            row[name] = AWKWARD[rng.integers(len(AWKWARD))]
        rows.append(row)
    raw = pd.DataFrame(rows, columns=list(RAW_COLUMNS), dtype=object)
    seen = pd.Index([f"e{i}" for i in range(0, 300, 13)], dtype="string")
    expected = both(spark, raw, seen, buckets=(2, 7, 31))
    assert len(expected.accepted) > 50 and len(expected.rule_counts) > 10


def test_many_arrival_days_in_order_on_spark_equal_single_process(spark):
    """Days run in order, each against the ids the earlier days accepted (as `validated_events` runs them)."""
    rng = np.random.default_rng(5)
    seen_pandas = seen_spark = pd.Index([], dtype="string")
    for day in range(3):
        arrival = ARRIVAL + day * DAY
        rows = [event(event_id=f"e{rng.integers(0, 120)}", user_id=int(rng.integers(0, 9)),
                      ts=arrival + pd.Timedelta(hours=float(rng.uniform(-60, 30))), price=float(rng.uniform(-1, 9)))
                for _ in range(150)]
        raw = frame(rows)
        expected = validate_arrivals(raw, arrival, LATENESS, seen_pandas)
        actual = validate_day(raw, arrival, LATENESS, seen_spark, SPARK)
        assert_same(actual, expected, raw)
        assert expected.rule_counts.get("event_id.unique", 0) > 0
        seen_pandas = seen_pandas.append(pd.Index(expected.accepted["event_id"], dtype="string"))
        seen_spark = seen_spark.append(pd.Index(actual.accepted["event_id"], dtype="string"))


def test_row_buckets_keep_every_copy_of_an_id_together():
    from feature_repo.spark_validation import row_buckets, seen_by_bucket

    ids = pd.Series(["a", "b", "a", None, "c", "b", None, "a"], dtype=object)
    buckets = row_buckets(ids, 4)
    assert buckets[0] == buckets[2] == buckets[7] and buckets[1] == buckets[5]
    assert list(buckets[[3, 6]]) == [3 % 4, 6 % 4]  # no id: by position
    shares = seen_by_bucket(pd.Index(["a", "b", "c", pd.NA], dtype="string"), 4)
    assert sorted(v for share in shares for v in share.dropna()) == ["a", "b", "c"]
    assert all(share.isna().sum() == 1 for share in shares)  # not text: in every bucket
    assert "a" in shares[buckets[0]] and "b" in shares[buckets[1]]


def test_ids_held_as_numbers_are_validated_as_single_process(spark):
    """An id column of numbers (not text) is validated on the driver: its text may change when typed (module doc)."""
    raw = frame([event(event_id=None, ts=ON_TIME)] + [event(event_id=None, ts=ON_TIME) for _ in range(3)])
    raw["event_id"] = pd.array([1.0, 2.0, 1.0, None], dtype="Float64")
    both(spark, raw, pd.Index(["2.0"], dtype="string"), buckets=(3,))
    raw["event_id"] = np.array([1.5, 1.5, 3.0, np.nan])
    both(spark, raw, None, buckets=(3,))


def test_a_raw_column_named_like_the_position_is_refused(spark):
    from feature_repo.spark_validation import POSITION

    raw = frame([event()]).assign(**{POSITION: 0})
    with pytest.raises(ValueError, match="rename it"):
        validate_day(raw, ARRIVAL, LATENESS, None, SPARK)
