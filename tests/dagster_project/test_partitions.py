"""Daily arrival partitions: a backfill over a range, day-by-day runs and a re-run of one day write the same lake;
every day's events are accounted for; the snapshots in the end equal a one-shot computation. Decision partitions:
only the days that hold decisions and are over."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from dagster_project.assets import features, ingestion, validation
from dagster_project.partitions import (
    DECISION_DAYS, complete_decision_days, partition_range_tags, shop_days, unregistered_decision_days,
)
from dagster_project.resources import build_resources
from dagster_project.resources.data_lake import (
    ACTIVITY_TILES, CUSTOMERS, QUARANTINE, RAW_EVENTS, USER_ACTIVITY, VALIDATED_EVENTS, DataLakeResource,
)
from feature_repo.pseudonyms import pseudonymize_ids
from feature_repo.transforms import event_tiles, snapshots_from_tiles
from infra.settings import HyperliftSettings
from simulator import ShopConfig

SHOP = ShopConfig(n_users=600, n_items=60, n_days=6, seed=5, corrupt_rate=0.01)
DAYS = [f"2026-10-0{d}" for d in range(1, 7)]
PARTITIONED = [ingestion.raw_events, validation.validated_events, features.user_activity_features]
ASSETS = [ingestion.landing, ingestion.shop_reference, *PARTITIONED, validation.validation_report]
TABLES = (RAW_EVENTS, VALIDATED_EVENTS, QUARANTINE, ACTIVITY_TILES, USER_ACTIVITY)


@pytest.fixture(scope="module", autouse=True)
def one_pseudonym_key(tmp_path_factory):
    """Every home of this module keys its lake by one pseudonym key (HYPERLIFT_KEYS_FILE), so that lakes built by
    different runs can be compared byte for byte; a home of its own would make its own key."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HYPERLIFT_KEYS_FILE", str(tmp_path_factory.mktemp("keys") / "keys.json"))
        yield


def _resources(home: Path, redis_url: str) -> dict:
    return build_resources(HyperliftSettings(home=home, reports_dir=home / "reports"), redis_url, SHOP)


def _lake_users(lake: DataLakeResource) -> np.ndarray:
    """Every customer's lake id (the pseudonym the pipeline keys features by), sorted as the asset sorts them."""
    return np.unique(pseudonymize_ids(lake.read(CUSTOMERS, columns=["user_id"])["user_id"], lake.pseudonymizer()))


def _run(resources: dict, assets: list, tags: dict[str, str]) -> None:
    result = dg.materialize(assets, resources=resources, tags=tags, instance=dg.DagsterInstance.ephemeral())
    assert result.success


def _lake_bytes(resources: dict) -> dict[str, bytes]:
    lake: DataLakeResource = resources["lake"]
    return {
        f"{table}/{key}": (lake.path(table) / f"{key}.parquet").read_bytes()
        for table in TABLES for key in lake.partition_keys(table)
    }


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory, redis_databases):
    """The whole period in one run (single-run backfill)."""
    resources = _resources(tmp_path_factory.mktemp("backfill") / "hl", redis_databases.fresh())
    _run(resources, ASSETS, shop_days(SHOP))
    return resources


def test_day_by_day_runs_and_a_rerun_write_the_same_lake_as_one_backfill(backfilled, tmp_path, redis_databases):
    daily = _resources(tmp_path / "daily", redis_databases.fresh())
    _run(daily, [ingestion.landing, ingestion.shop_reference], {})
    for day in DAYS:
        _run(daily, PARTITIONED, partition_range_tags(day, day))
    expected = _lake_bytes(backfilled)
    assert len(expected) == 5 * len(DAYS)  # every table has one file per day (snapshot files: stamps 10-02 … 10-07)
    assert _lake_bytes(daily) == expected
    _run(daily, PARTITIONED, partition_range_tags(DAYS[2], DAYS[3]))  # a re-run of two days in the middle
    assert _lake_bytes(daily) == expected


def test_every_day_accounts_for_its_events_and_late_ones_are_routed(backfilled):
    lake: DataLakeResource = backfilled["lake"]
    report = validation.validation_counts(lake)
    assert report["arrival_day"].tolist() == DAYS
    assert (report["events_in"] == report["accepted"] + report["quarantined"]).all()
    assert int(report["events_in"].sum()) == len(lake.read(RAW_EVENTS))
    rules = [c for c in report.columns if c.startswith("rule:")]
    assert (report[rules].sum(axis=1) == report["quarantined"]).all()
    # Four days late (simulator.arrival) is behind the default two-day watermark: routed, never silently lost.
    n_beyond = 0
    for day in DAYS:
        quarantined = lake.read_partitions(QUARANTINE, [day])
        beyond = quarantined[quarantined["rule"] == "ts.beyond_watermark"]
        lag = pd.Timestamp(day, tz="UTC") - pd.to_datetime(beyond["ts"], utc=True).dt.floor("D")
        assert (lag > pd.Timedelta(days=2)).all()
        n_beyond += len(beyond)
    assert n_beyond > 0 and int(report["rule:ts.beyond_watermark"].sum()) == n_beyond
    accepted = lake.read(VALIDATED_EVENTS)
    assert not accepted["event_id"].duplicated().any()


def test_final_snapshots_equal_a_one_shot_computation_over_the_accepted_events(backfilled):
    lake: DataLakeResource = backfilled["lake"]
    snapshots = lake.read(USER_ACTIVITY)
    users = _lake_users(lake)
    stamps = pd.date_range("2026-10-02", periods=len(DAYS), freq="D", tz="UTC")
    expected = snapshots_from_tiles(event_tiles(lake.read(VALIDATED_EVENTS)), users, stamps)
    expected = expected.sort_values(["event_timestamp", "user_id"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(snapshots, expected, check_exact=True)
    assert np.array_equal(sorted(snapshots["event_timestamp"].unique()), stamps.to_numpy())


def _decision_files(root: Path, days: dict[str, int]) -> None:
    """A drained decision lake: `n` part files per day (0: an empty date folder, as a crashed write may leave)."""
    for day, n in days.items():
        folder = root / f"date={day}"
        folder.mkdir(parents=True)
        for i in range(n):
            (folder / f"part-{i}.parquet").write_bytes(b"")


def test_decision_days_are_the_dates_with_decisions_that_are_over(tmp_path):
    root = tmp_path / "decisions"
    assert complete_decision_days(root, 0.0) == []  # nothing drained yet
    _decision_files(root, {"2026-10-31": 2, "2026-11-02": 1, "2026-11-03": 0, "2026-11-04": 1})
    end_of_11_02 = pd.Timestamp("2026-11-03", tz="UTC").timestamp()
    assert complete_decision_days(root, end_of_11_02) == ["2026-10-31", "2026-11-02"]  # 11-01: no folder
    assert complete_decision_days(root, end_of_11_02 - 1) == ["2026-10-31"]  # 11-02 is still arriving
    assert complete_decision_days(root, end_of_11_02 + 2 * 86_400) == ["2026-10-31", "2026-11-02", "2026-11-04"]


def test_only_days_the_instance_lacks_are_registered():
    instance = dg.DagsterInstance.ephemeral()
    assert DECISION_DAYS.get_partition_keys(dynamic_partitions_store=instance) == []
    instance.add_dynamic_partitions(DECISION_DAYS.name, ["2026-10-31"])
    assert unregistered_decision_days(instance, ["2026-10-31", "2026-11-02"]) == ["2026-11-02"]


def _redis_features(resources: dict, users: np.ndarray, stamps: pd.DatetimeIndex) -> np.ndarray:
    """The activity features the Redis tiles `online_tiles` wrote give at `stamps` (running tiles included)."""
    import redis

    from feature_repo.stream import read_tiles
    from feature_repo.transforms import ACTIVITY_FEATURES

    tiles, folds = read_tiles(redis.Redis.from_url(resources["redis"].url), users)
    rows = snapshots_from_tiles(tiles, users, stamps, folds)
    return rows[list(ACTIVITY_FEATURES)].to_numpy(np.float32)


def test_retention_folds_old_tiles_and_later_days_write_the_same_features(tmp_path, redis_databases):
    from dagster_project.assets.stream_state import online_tiles
    from feature_repo.event_time import Lateness
    from feature_repo.lake_fold import read_lake_fold
    from infra.erasure.procedure import Target
    from infra.erasure.retention import enforce
    from infra.erasure.settings import RetentionSettings

    home = tmp_path / "hl"
    resources = _resources(home, redis_databases.fresh())
    _run(resources, ASSETS, shop_days(SHOP))
    lake: DataLakeResource = resources["lake"]
    users = _lake_users(lake)
    stamps = pd.DatetimeIndex([pd.Timestamp("2026-10-07", tz="UTC"), pd.Timestamp("2026-10-07T13:00Z")])
    online_tiles(dg.build_asset_context(), lake=lake, redis=resources["redis"], event_time=resources["event_time"])
    online_before = _redis_features(resources, users, stamps)
    kept = {f"{table}/{day}" for table in (ACTIVITY_TILES, USER_ACTIVITY) for day in ("2026-10-05", "2026-10-06")}
    expected = {k: v for k, v in _lake_bytes(resources).items() if k in kept or k.endswith("2026-10-07")}

    # One day of feature retention as of 10-06 00:00: the tile partitions of arrival days 10-01 … 10-04 go.
    target = Target(HyperliftSettings(home=home, reports_dir=home / "reports"), resources["redis"].url, "salt",
                    home / "serving" / "decision_wal")
    report = enforce(target, RetentionSettings(features_days=1), now=pd.Timestamp("2026-10-06T00:00Z").timestamp(),
                     lateness=Lateness(2))
    assert report["activity_fold"]["partitions_folded"] == DAYS[:4]
    assert lake.partition_keys(ACTIVITY_TILES) == DAYS[4:]
    fold = read_lake_fold(Path(lake.root))
    assert fold.through == "2026-10-04" and len(fold.folds) > 0 and len(fold.carried) > 0

    # The days after the fold re-run to the same bytes; the Redis tiles give the same features.
    _run(resources, PARTITIONED, partition_range_tags(DAYS[4], DAYS[5]))
    after = _lake_bytes(resources)
    assert {k: after[k] for k in expected} == expected
    online_tiles(dg.build_asset_context(), lake=lake, redis=resources["redis"], event_time=resources["event_time"])
    assert np.array_equal(_redis_features(resources, users, stamps), online_before)
    # A folded day cannot run again: its events would count twice.
    with pytest.raises(Exception, match=r"in the lake fold through 2026-10-04 .* count their events twice"):
        _run(resources, PARTITIONED, partition_range_tags(DAYS[3], DAYS[4]))
