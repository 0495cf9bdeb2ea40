"""The Dagster validation and feature assets with HYPERLIFT_OFFLINE_ENGINE=spark write the lake the pandas engine
writes, byte for byte: validated events, quarantine, activity tiles and snapshots."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from dagster_project.assets import features, ingestion, validation
from dagster_project.partitions import shop_days
from dagster_project.resources import build_resources
from dagster_project.resources.data_lake import (
    ACTIVITY_TILES, QUARANTINE, USER_ACTIVITY, VALIDATED_EVENTS, DataLakeResource,
)
from infra.keys import KEYS_FILE_ENV
from infra.settings import HyperliftSettings
from simulator import ShopConfig
from tests.feature_repo.spark_support import SPARK_TEST_MASTER, spark  # noqa: F401  (the session fixture)

pytestmark = pytest.mark.spark

SHOP = ShopConfig(n_users=200, n_items=30, n_days=3, seed=5, corrupt_rate=0.01)
ASSETS = [ingestion.landing, ingestion.shop_reference, ingestion.raw_events, validation.validated_events,
          features.user_activity_features]


def lake_after_backfill(home: Path, redis_url: str, engine: str, monkeypatch) -> dict[str, bytes]:
    """The validated, quarantined, tile and snapshot files a one-run backfill of the shop writes on `engine`."""
    monkeypatch.setenv("HYPERLIFT_OFFLINE_ENGINE", engine)
    monkeypatch.setenv("HYPERLIFT_SPARK_MASTER", SPARK_TEST_MASTER)
    resources = build_resources(HyperliftSettings(home=home, reports_dir=home / "reports"), redis_url, SHOP)
    result = dg.materialize(ASSETS, resources=resources, tags=shop_days(SHOP), instance=dg.DagsterInstance.ephemeral())
    assert result.success
    lake: DataLakeResource = resources["lake"]
    tables = (VALIDATED_EVENTS, QUARANTINE, ACTIVITY_TILES, USER_ACTIVITY)
    return {f"{table}/{key}": (lake.path(table) / f"{key}.parquet").read_bytes()
            for table in tables for key in lake.partition_keys(table)}


def test_validation_and_features_on_spark_write_the_same_files(tmp_path, redis_databases, monkeypatch, spark):
    from feature_repo import spark_tiles, spark_validation

    # Both homes key their lake by one pseudonym key (a deployment's mounted key file), so their files can be equal.
    monkeypatch.setenv(KEYS_FILE_ENV, str(tmp_path / "keys" / "keys.json"))
    expected = lake_after_backfill(tmp_path / "pandas", redis_databases.fresh(), "pandas", monkeypatch)
    # a day of this shop is a few hundred events: cut it into several buckets, as a large day would be
    monkeypatch.setattr(spark_validation, "ROWS_PER_BUCKET", 50)
    monkeypatch.setattr(spark_tiles, "EVENTS_PER_BUCKET", 50)
    actual = lake_after_backfill(tmp_path / "spark", redis_databases.fresh(), "spark", monkeypatch)
    assert len(expected) == 4 * SHOP.n_days  # per day: validated, quarantine, tiles; a snapshot file per stamp
    assert sorted(actual) == sorted(expected)
    for name in expected:
        assert actual[name] == expected[name], name
