"""feature_repo.spark_point_in_time equals feature_repo.point_in_time: same rows, order, columns, dtypes and values."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Bool, Float32, Float64, Int64, String

from feature_repo import point_in_time as single
from feature_repo.definitions import UPLIFT_FEATURE_SERVICE
from feature_repo.offline_engine import training_set_join
from feature_repo.store import feature_store
from infra.settings import HyperliftSettings
from tests.feature_repo.spark_support import SPARK_TEST_MASTER, spark  # noqa: F401  (the session fixture)
from tests.feature_repo.test_point_in_time import CASES, FILE_STORE_DROPS, entity_frame, store  # noqa: F401

pytestmark = pytest.mark.spark

D = pd.Timestamp("2026-10-02", tz="UTC")
DAY = pd.Timedelta(days=1)


def both(entity_df, views, store, spark, **options) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pandas engine, Spark engine) on the same input, through the entry point the training_set asset calls."""
    engines = [HyperliftSettings(offline_engine=name, spark_master=SPARK_TEST_MASTER) for name in ("pandas", "spark")]
    pandas_result, spark_result = (training_set_join(entity_df, views, store, s, **options) for s in engines)
    return pandas_result, spark_result


@pytest.mark.parametrize("drop_like_file_store", [False, True])
def test_project_views_edge_cases_equal_the_single_process_join(store, spark, drop_like_file_store):
    # exactly at a snapshot, 1 µs either side, the TTL edge and 1 µs past it, before the first row, profile only,
    # unknown user: every case of test_point_in_time.py
    entity_df = entity_frame(CASES)
    expected, actual = both(entity_df, single.service_views(store, UPLIFT_FEATURE_SERVICE), store, spark,
                            drop_like_file_store=drop_like_file_store)
    pd.testing.assert_frame_equal(actual, expected, check_exact=True)
    kept = {name for name, _, _ in CASES} - (FILE_STORE_DROPS if drop_like_file_store else set())
    assert set(actual["action_id"]) == kept
    assert actual["page_views_total"].dtype == np.float32 and actual["region_code"].dtype == np.float64


def random_views(data_dir: Path, seed: int, store) -> list[FeatureView]:
    """Two views over awkward parquet sources: revisions with equal event and created times (file order decides),
    null created times and keys, float NaN, integer and boolean nulls, nanosecond stamps, an empty file."""
    rng = np.random.default_rng(seed)
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    n = 4000
    stamps = D + pd.to_timedelta(rng.integers(0, 8, n), unit="D")
    jitter = np.where(rng.random(n) < 0.3, rng.integers(0, 10**12, n), 0)  # 30 % carry ns offsets, 70 % midnights
    activity = pd.DataFrame({
        "user_id": pd.array(np.where(rng.random(n) < 0.01, None, rng.integers(0, 150, n)), dtype="Int64"),
        "event_timestamp": stamps + pd.to_timedelta(jitter, unit="ns"),
        "created": pd.Series(stamps + pd.to_timedelta(rng.integers(0, 3, n), unit="h")).where(rng.random(n) > 0.1),
        "a0": np.where(rng.random(n) < 0.05, np.nan, rng.standard_normal(n)).astype(np.float32),
        "a1": rng.standard_normal(n),
        "a2": pd.array(np.where(rng.random(n) < 0.05, None, rng.integers(-5, 5, n)), dtype="Int64"),
    })
    folder = data_dir / "activity"
    folder.mkdir(parents=True)
    for part, rows in enumerate(np.array_split(np.arange(n), 3)):
        activity.iloc[rows].to_parquet(folder / f"part-{part}.parquet", index=False)
    activity.iloc[:0].to_parquet(folder / "part-3.parquet", index=False)  # an empty partition
    m = 160
    profile = pd.DataFrame({
        "user_id": rng.integers(0, 170, m).astype(np.int64),
        "event_timestamp": D - pd.to_timedelta(rng.integers(-3, 30, m), unit="D"),
        "b0": rng.integers(0, 4, m).astype(np.int64),
        "b1": rng.random(m) < 0.5,
        "b2": np.where(rng.random(m) < 0.5, "north", "south").astype(object),
    })
    profile.to_parquet(data_dir / "profile.parquet", index=False)
    a_source = FileSource(name="a_src", path=str(folder), timestamp_field="event_timestamp",
                          created_timestamp_column="created")
    b_source = FileSource(name="b_src", path=str(data_dir / "profile.parquet"), timestamp_field="event_timestamp")
    views = [
        FeatureView(name="a_fv", entities=[user], ttl=timedelta(days=2), source=a_source,
                    schema=[Field(name="a0", dtype=Float32), Field(name="a1", dtype=Float64), Field(name="a2", dtype=Int64)]),
        FeatureView(name="b_fv", entities=[user], ttl=timedelta(0), source=b_source,
                    schema=[Field(name="b0", dtype=Int64), Field(name="b1", dtype=Bool), Field(name="b2", dtype=String)]),
    ]
    store.apply([user, a_source, b_source, *views])
    return [store.get_feature_view(view.name) for view in views]


def random_entities(seed: int, n: int = 3000) -> pd.DataFrame:
    """Entity rows at midnights (ties with source rows), 1 ns around them and anywhere; unknown and null users;
    exact duplicates."""
    rng = np.random.default_rng(seed + 100)
    base = D + pd.to_timedelta(rng.integers(-1, 10, n), unit="D")
    offset = rng.choice([0, 1, -1, 0, 0], n) + np.where(rng.random(n) < 0.4, rng.integers(0, 86_400 * 10**9, n), 0)
    frame = pd.DataFrame({
        "user_id": pd.array(np.where(rng.random(n) < 0.02, None, rng.integers(-3, 175, n)), dtype="Int64"),
        "event_timestamp": base + pd.to_timedelta(offset, unit="ns"),
        "action_id": rng.choice(["none", "promo_1", "promo_2"], n),
        "label": rng.random(n),
    })
    return pd.concat([frame, frame.iloc[:50]], ignore_index=True)


@pytest.mark.parametrize(("seed", "drop_like_file_store"), [(0, False), (1, True)])
def test_random_sources_equal_the_single_process_join(settings, online_redis_url, tmp_path, spark, seed,
                                                      drop_like_file_store):
    store = feature_store(online_redis_url, settings)
    views = random_views(tmp_path, seed, store)
    entity_df = random_entities(seed)
    expected, actual = both(entity_df, views, store, spark, drop_like_file_store=drop_like_file_store)
    pd.testing.assert_frame_equal(actual, expected, check_exact=True)
    # the inputs reach the cases they are for: no-match rows, TTL expiry, integer nulls
    assert expected["a0"].isna().any() and expected["a0"].notna().sum() > 500
    assert expected["b0"].dtype == np.float64 and expected["b1"].dtype == object


def test_only_one_entity_row_and_a_view_subset(settings, online_redis_url, tmp_path, spark):
    store = feature_store(online_redis_url, settings)
    views = random_views(tmp_path, 3, store)
    entity_df = random_entities(3).iloc[[7]].reset_index(drop=True)
    expected, actual = both(entity_df, [views[0][["a2"]], views[1][["b0"]]], store, spark)
    pd.testing.assert_frame_equal(actual, expected, check_exact=True)


def test_refuses_what_the_single_process_join_refuses(store, spark):
    from feature_repo.spark_point_in_time import point_in_time_join

    views = single.service_views(store, UPLIFT_FEATURE_SERVICE)
    entity_df = entity_frame(CASES[:2])
    with pytest.raises(ValueError, match="no column 'user_id', the join key of user_activity_fv"):
        point_in_time_join(entity_df.drop(columns="user_id"), views, store, spark)
    with pytest.raises(ValueError, match="1 rows without a 'event_timestamp'"):
        point_in_time_join(entity_df.assign(event_timestamp=[D, pd.NaT]), views, store, spark)
    with pytest.raises(ValueError, match="'page_views_total' of user_activity_fv is already a column"):
        point_in_time_join(entity_df.assign(page_views_total=1.0), views, store, spark)


def test_as_of_join_keeps_the_entity_rows_in_spark(store, spark):
    from feature_repo.spark_point_in_time import KEY, ROW, TS, as_of_join

    entity_df = entity_frame(CASES)
    views = single.service_views(store, UPLIFT_FEATURE_SERVICE)
    expected = single.point_in_time_join(entity_df, views, store)
    probes = spark.createDataFrame(pd.DataFrame({
        ROW: np.arange(len(entity_df)), KEY: entity_df["user_id"].to_numpy(),
        TS: entity_df["event_timestamp"].dt.as_unit("ns").array.asi8,
    }))
    got = as_of_join(probes, views, store).toPandas().sort_values(ROW, ignore_index=True)
    for name in ("page_views_total", "region_code"):
        np.testing.assert_array_equal(got[name].to_numpy(np.float64), expected[name].to_numpy(np.float64), err_msg=name)
    # the activity view has rows for the user, none in the window: exactly the rows Feast's file store drops
    assert got["_hl_stale_0"].tolist() == [name in FILE_STORE_DROPS for name, _, _ in CASES]
