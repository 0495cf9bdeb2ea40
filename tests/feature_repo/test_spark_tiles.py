"""A day's activity tiles on Spark equal `transforms.event_tiles`: the same frame (rows, order, dtypes, values)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feature_repo.contracts import validate_events
from feature_repo.offline_engine import tiles_of_day
from feature_repo.transforms import TILE_COLUMNS, event_tiles
from infra.settings import HyperliftSettings
from tests.feature_repo.factories import START, event, frame
from tests.feature_repo.spark_support import SPARK_TEST_MASTER, spark  # noqa: F401  (the session fixture)

pytestmark = pytest.mark.spark

SPARK = HyperliftSettings(offline_engine="spark", spark_master=SPARK_TEST_MASTER)
PANDAS = HyperliftSettings(offline_engine="pandas", spark_master=SPARK_TEST_MASTER)
KINDS = ("page_view", "add_to_cart", "purchase", "promo_exposure")


def accepted_day(seed: int, events: int = 3000) -> pd.DataFrame:
    """Accepted events of every kind over three event days: a few users with hundreds of events, many with one,
    ids up to 2^53 − 1, times 1 ns apart around midnights, money with fractions of a micro-unit."""
    rng = np.random.default_rng(seed)
    heavy = rng.integers(0, 5, events)
    users = np.where(rng.random(events) < 0.5, heavy, rng.integers(5, 2 * events, events))
    users[:3] = [2**53 - 1, 0, 2**40]
    rows = []
    for i in range(events):
        kind = KINDS[rng.integers(len(KINDS))]
        ts = START + pd.Timedelta(days=int(rng.integers(0, 3))) - pd.Timedelta(nanoseconds=int(rng.integers(-2, 2)))
        if rng.random() < 0.5:
            ts += pd.Timedelta(microseconds=int(rng.integers(0, 86_400_000_000)))
        fields = dict(event_id=f"e{i}", event_type=kind, ts=ts, user_id=int(users[i]),
                      device=["mobile", "desktop", None][rng.integers(3)], category_id=int(rng.integers(0, 8)),
                      price=round(float(rng.uniform(0.01, 500)), 7))
        if kind == "purchase":
            fields |= dict(revenue=round(float(rng.uniform(0, 500)), 7), action_id="no_action")
        if kind == "promo_exposure":
            fields |= dict(item_id=None, category_id=None, price=None, action_id="pct10_sitewide", propensity=0.5,
                           surface="home")
        rows.append(event(**fields))
    result = validate_events(frame(rows), START + pd.Timedelta(days=4))
    assert result.quarantined.empty
    return result.accepted


def assert_same(spark, events: pd.DataFrame, buckets: tuple[int, ...]) -> pd.DataFrame:
    from feature_repo.spark_tiles import event_tiles as spark_tiles

    expected = event_tiles(events)
    pd.testing.assert_frame_equal(tiles_of_day(events, SPARK), expected, check_exact=True)
    pd.testing.assert_frame_equal(tiles_of_day(events, PANDAS), expected, check_exact=True)
    for n in buckets:
        pd.testing.assert_frame_equal(spark_tiles(spark, events, buckets=n), expected, check_exact=True, obj=f"{n}")
    return expected


def test_a_day_of_tiles_on_spark_equals_single_process(spark):
    events = accepted_day(0)
    expected = assert_same(spark, events, (1, 4, 9, 10_000))
    per_user = expected.groupby("user_id").size()
    assert per_user.max() >= 3 and (per_user == 1).sum() > 100  # users with many tiles and with one
    assert expected["views"].max() > 20 and expected["revenue_micros"].gt(0).any()
    assert list(expected.columns) == list(TILE_COLUMNS)


def test_tiles_as_read_back_from_the_lake_one_event_and_none(spark, tmp_path):
    events = accepted_day(1, events=400)
    events.to_parquet(tmp_path / "day.parquet", index=False)
    assert_same(spark, pd.read_parquet(tmp_path / "day.parquet"), (3,))  # what the asset reads
    assert_same(spark, events.iloc[[7]], (1, 2))
    empty = events.iloc[:0]
    assert assert_same(spark, empty, (2,)).empty


def test_a_missing_user_fails_as_single_process(spark):
    events = accepted_day(2, events=20)
    events.loc[3, "user_id"] = pd.NA
    with pytest.raises(ValueError) as single:
        event_tiles(events)
    with pytest.raises(ValueError) as on_spark:
        tiles_of_day(events, SPARK)
    assert str(on_spark.value) == str(single.value)
