"""Feast's Spark offline store, configured as feature_repo/spark_feast.py says, returns the project's join's values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_repo.definitions import UPLIFT_FEATURE_SERVICE, build_repo
from feature_repo.point_in_time import point_in_time_join, service_views
from feature_repo.store import feature_store
from feature_repo.transforms import ACTIVITY_FEATURES, PROFILE_FEATURES
from infra.settings import HyperliftSettings
from tests.feature_repo.spark_support import SPARK_TEST_MASTER, spark  # noqa: F401  (the session fixture)
from tests.feature_repo.test_point_in_time import (
    ACTIVITY_ROWS, CASES, KEYS, PROFILE_ROWS, US, D, activity_value, by_key, entity_frame, profile_value,
)

pytestmark = pytest.mark.spark


def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """test_point_in_time.py's activity and profile rows (distinct values per source row)."""
    activity = pd.DataFrame(ACTIVITY_ROWS, columns=KEYS)
    for f, name in enumerate(ACTIVITY_FEATURES):
        activity[name] = np.array([activity_value(r, f) for r in range(len(activity))], dtype=np.float32)
    profile = pd.DataFrame(PROFILE_ROWS, columns=KEYS)
    for f, name in enumerate(PROFILE_FEATURES):
        profile[name] = np.array([profile_value(r, f) for r in range(len(profile))], dtype=np.int64)
    return activity, profile


def test_feast_spark_offline_store_equals_the_project_join(settings, online_redis_url, tmp_path, spark):
    from feature_repo.spark_feast import feast_spark_store, spark_repo_objects, write_for_spark

    repo = build_repo(settings.data_dir)
    activity, profile = tables()
    write_for_spark(activity, Path(repo.activity_source.path) / "part-0.parquet")
    write_for_spark(profile, Path(repo.profile_source.path))
    store = feature_store(online_redis_url, settings)
    store.apply(repo.objects())
    # Feast's Spark store: its own registry, the same parquet files declared as SparkSources
    spark_settings = HyperliftSettings(home=tmp_path / "feast-spark", spark_master=SPARK_TEST_MASTER)
    feast_spark = feast_spark_store(online_redis_url, spark_settings)
    feast_spark.apply(spark_repo_objects(repo))
    entity_df = entity_frame(CASES + [("dup", 1, D + US)]).drop(columns="segment")

    expected = by_key(point_in_time_join(entity_df, service_views(store, UPLIFT_FEATURE_SERVICE), store))
    job = feast_spark.get_historical_features(
        entity_df=entity_df, features=feast_spark.get_feature_service(UPLIFT_FEATURE_SERVICE)
    )
    actual = by_key(job.to_df()[list(expected.columns)])
    assert len(actual) == len(entity_df)  # every entity row, nulls where no row qualifies, as the project's join
    for column in expected.columns:  # Feast's Spark store returns its own dtypes (object for nullable integers)
        if column in (*ACTIVITY_FEATURES, *PROFILE_FEATURES):
            np.testing.assert_array_equal(actual[column].to_numpy(np.float64), expected[column].to_numpy(np.float64),
                                          err_msg=column)
    assert actual["action_id"].tolist() == expected["action_id"].tolist()
    np.testing.assert_array_equal(actual["event_timestamp"].dt.as_unit("ns").array.asi8,
                                  expected["event_timestamp"].dt.as_unit("ns").array.asi8)


def test_nanosecond_parquet_is_refused_by_feasts_spark_store(settings, online_redis_url, tmp_path, spark):
    from pyspark.errors import AnalysisException

    from feature_repo.spark_feast import feast_spark_store, spark_repo_objects

    repo = build_repo(settings.data_dir)
    activity, profile = tables()
    Path(repo.activity_source.path).mkdir(parents=True)
    activity.to_parquet(Path(repo.activity_source.path) / "part-0.parquet", index=False)  # ns, as the lake writes
    profile.to_parquet(repo.profile_source.path, index=False)
    feast_spark = feast_spark_store(online_redis_url, HyperliftSettings(home=tmp_path / "fs", spark_master=SPARK_TEST_MASTER))
    feast_spark.apply(spark_repo_objects(repo))
    # In the engine's session (nanoseconds read as int64) Feast's SQL cannot compare them with the entity times; in a
    # session of its own Spark refuses the file ("Illegal Parquet type: INT64 (TIMESTAMP(NANOS,true))").
    with pytest.raises(AnalysisException, match="BIGINT.*TIMESTAMP"):
        feast_spark.get_historical_features(
            entity_df=entity_frame(CASES[:2]).drop(columns="segment"),
            features=feast_spark.get_feature_service(UPLIFT_FEATURE_SERVICE),
        ).to_df()
