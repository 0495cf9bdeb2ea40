"""Activity snapshots on Spark equal `snapshots_from_tiles` / `partition_snapshots`: same frames, bit for bit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feature_repo.event_time import Lateness
from feature_repo.offline_engine import partition_snapshots
from feature_repo.transforms import TILE_COLUMNS, TILE_MAXES, TILE_SUMS, US_PER_DAY, merge_tiles, snapshots_from_tiles
from infra.settings import HyperliftSettings
from tests.feature_repo.spark_support import SPARK_TEST_MASTER, spark  # noqa: F401  (the session fixture)

pytestmark = pytest.mark.spark

ARRIVAL = pd.Timestamp("2026-10-20", tz="UTC")
DAY0 = int(pd.Timestamp("2026-09-01", tz="UTC").value // 1000 // US_PER_DAY)


def random_tiles(seed: int, users: int = 400, days: int = 50) -> pd.DataFrame:
    """Tiles of steady, sparse and silent users (a quarter have none), counts, money and latest times at random,
    merged from an on-time and a late part (the same days again)."""
    rng = np.random.default_rng(seed)
    parts = []
    for user in range(users):
        if user % 4 == 0:
            continue
        active = DAY0 + np.flatnonzero(rng.random(days) < (0.7 if user % 4 == 1 else 0.1))
        n = len(active)
        tile = {"user_id": np.full(n, user), "day": active}
        tile.update({c: rng.integers(0, 4, n) * (rng.random(n) < 0.7) for c in TILE_SUMS})
        tile["revenue_micros"] = rng.integers(0, 10**9, n) * (tile["purchases"] > 0)
        for c in TILE_MAXES:
            tile[c] = np.where(rng.random(n) < 0.6, active * US_PER_DAY + rng.integers(0, US_PER_DAY, n), -1)
        parts.append(pd.DataFrame(tile))
    tiles = pd.concat(parts, ignore_index=True)
    return merge_tiles(tiles[list(TILE_COLUMNS)], tiles.sample(frac=0.2, random_state=seed)[list(TILE_COLUMNS)])


def test_partition_snapshots_on_spark_equal_the_single_process_ones(spark):
    tiles = random_tiles(0)
    # users as the asset passes them (customers, in their order): some without tiles, one unknown to the tiles,
    # and tiles of a user not asked for (left out of every row)
    users = np.r_[np.random.default_rng(1).permutation(400)[:390], 10_000].astype(np.int64)
    engines = [HyperliftSettings(offline_engine=name, spark_master=SPARK_TEST_MASTER) for name in ("pandas", "spark")]
    lateness = Lateness(2)
    expected, actual = (partition_snapshots(tiles, users, ARRIVAL, lateness, engine) for engine in engines)
    assert list(actual) == list(expected) == list(lateness.revised_stamps(ARRIVAL))
    for stamp in expected:
        pd.testing.assert_frame_equal(actual[stamp], expected[stamp], check_exact=True, obj=str(stamp))
    assert expected[ARRIVAL]["page_views_total"].gt(0).any()


def test_snapshots_at_any_stamps_and_without_tiles(spark):
    from feature_repo.spark_snapshots import snapshots

    tiles = random_tiles(2, users=60)
    users = np.arange(60, dtype=np.int64)
    stamps = pd.DatetimeIndex([ARRIVAL - pd.Timedelta(days=30), ARRIVAL + pd.Timedelta(hours=5, microseconds=3)])
    pd.testing.assert_frame_equal(snapshots(spark, tiles, users, stamps, buckets=7),
                                  snapshots_from_tiles(tiles, users, stamps), check_exact=True)
    empty = merge_tiles()
    pd.testing.assert_frame_equal(snapshots(spark, empty, users, stamps), snapshots_from_tiles(empty, users, stamps),
                                  check_exact=True)


def test_partition_snapshots_with_the_lake_fold_on_spark_equal_the_single_process_ones(spark):
    from feature_repo.transforms import empty_folds, fold_tiles

    tiles = random_tiles(3)
    left, folds = fold_tiles(tiles, empty_folds(), DAY0 + 30)  # retention folded the first 31 days
    assert len(folds) and left["day"].min() > DAY0 + 30
    users = np.r_[np.random.default_rng(4).permutation(400)[:380], 10_000].astype(np.int64)
    engines = [HyperliftSettings(offline_engine=name, spark_master=SPARK_TEST_MASTER) for name in ("pandas", "spark")]
    lateness = Lateness(2)
    expected, actual = (partition_snapshots(left, users, ARRIVAL, lateness, engine, folds) for engine in engines)
    unfolded = partition_snapshots(tiles, users, ARRIVAL, lateness, engines[0])
    for stamp in expected:
        pd.testing.assert_frame_equal(actual[stamp], expected[stamp], check_exact=True, obj=str(stamp))
        pd.testing.assert_frame_equal(expected[stamp], unfolded[stamp], check_exact=True, obj=str(stamp))
