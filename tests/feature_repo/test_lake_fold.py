"""The lake fold: deleting expired activity tile partitions keeps every later feature bit-identical, in the lake's
snapshots and in the Redis tiles, and a retention run cut short never counts a partition twice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import redis

from feature_repo.event_time import Lateness
from feature_repo.lake_fold import (
    LAKE_FOLD, LakeFold, day_number, fold_expiring, read_lake_fold, write_lake_fold,
)
from feature_repo.stream import read_tiles, tiles_key, write_tiles
from feature_repo.transforms import (
    ACTIVITY_FEATURES, TILE_COLUMNS, TILE_MAXES, TILE_SUMS, US_PER_DAY, merge_tiles, snapshots_from_tiles,
)

FIRST = "2025-01-01"
USERS = np.arange(1, 31, dtype=np.int64)


def _key(offset: int) -> str:
    return str((pd.Timestamp(FIRST) + pd.Timedelta(days=offset)).date())


def _partitions(seed: int, n_days: int = 60, allowed: int = 2) -> dict[str, pd.DataFrame]:
    """Tiles by arrival day: each arrival day P brings events of days P − allowed … P (mostly P), for 30 users of
    which some are active early only, some late only, some throughout."""
    rng = np.random.default_rng(seed)
    first_day = day_number(FIRST)
    out = {}
    for offset in range(n_days):
        rows = []
        for user in USERS:
            kind = user % 3
            if (kind == 1 and offset > 20) or (kind == 2 and offset < 40) or rng.random() < 0.4:
                continue
            for late in rng.choice([0, 0, 0, 1, allowed], size=rng.integers(1, 3)):
                day = first_day + offset - min(int(late), allowed)
                tile = {"user_id": int(user), "day": day}
                tile.update({c: int(rng.integers(0, 5)) for c in TILE_SUMS})
                tile["revenue_micros"] = int(rng.integers(0, 10**9)) * (tile["purchases"] > 0)
                tile.update({c: int(day * US_PER_DAY + rng.integers(0, US_PER_DAY)) if rng.random() < 0.7 else -1
                             for c in TILE_MAXES})
                rows.append(tile)
        out[_key(offset)] = merge_tiles(pd.DataFrame(rows, columns=list(TILE_COLUMNS)))
    return out


def _features(rows: pd.DataFrame) -> np.ndarray:
    return rows[list(ACTIVITY_FEATURES)].to_numpy(np.float32)


def _stamps(first_kept: str, allowed: int, n: int = 25) -> pd.DatetimeIndex:
    """The stamps the first kept arrival partition revises, and later ones inside days: every stamp the pipeline
    may still write."""
    later = pd.date_range(pd.Timestamp(first_kept, tz="UTC") + pd.Timedelta(days=1, hours=7), periods=n, freq="D")
    return Lateness(allowed).revised_stamps(pd.Timestamp(first_kept)).union(later)


@pytest.mark.parametrize(("seed", "allowed"), [(0, 2), (1, 0), (2, 3), (3, 1)])
def test_features_after_two_retention_runs_equal_those_of_every_tile(seed, allowed):
    parts = _partitions(seed, allowed=allowed)
    keys = sorted(parts)
    everything = merge_tiles(*parts.values())
    fold = LakeFold.empty()
    for cut in (17, 33):  # two runs: the second folds onto the first's fold and carried tiles
        expiring = {k: parts[k] for k in keys[:cut]}
        kept = {k: parts[k] for k in keys[cut:]}
        fold = fold_expiring(fold, expiring, kept, Lateness(allowed))
        assert fold.through == keys[cut - 1] and fold.fold_day == day_number(keys[cut - 1]) - allowed
        assert (fold.carried["day"] > fold.fold_day).all() and (fold.folds["fold_day"] <= fold.fold_day).all()
        stamps = _stamps(keys[cut], allowed)
        tiles = fold.tiles_with(*kept.values())
        assert np.array_equal(_features(snapshots_from_tiles(tiles, USERS, stamps, fold.folds)),
                              _features(snapshots_from_tiles(everything, USERS, stamps)))
        # The counts are exact too: nothing dropped, nothing counted twice.
        total = int(fold.folds["views"].sum() + tiles["views"].sum())
        assert total == int(everything["views"].sum())


def test_a_kept_partition_with_tiles_at_the_fold_day_is_refused():
    parts = _partitions(4, allowed=2)
    keys = sorted(parts)
    assert int(parts[keys[20]]["day"].min()) == day_number(keys[20]) - 2  # a tile as late as allowed
    with pytest.raises(ValueError, match=r"kept arrival partition .* holds tiles of day .* at or before the fold day "
                                         r".*run retention with the pipeline's allowed lateness"):
        fold_expiring(LakeFold.empty(), {k: parts[k] for k in keys[:20]}, {k: parts[k] for k in keys[20:]},
                      Lateness(1))
    with pytest.raises(ValueError, match="retention deletes partitions in day order"):
        fold_expiring(LakeFold.empty(), {keys[5]: parts[keys[5]]}, {keys[2]: parts[keys[2]]}, Lateness(2))


def test_a_run_cut_short_after_its_fold_does_not_count_its_partitions_twice(tmp_path):
    parts = _partitions(5)
    keys = sorted(parts)
    fold = fold_expiring(LakeFold.empty(), {k: parts[k] for k in keys[:20]}, {k: parts[k] for k in keys[20:]},
                         Lateness(2))
    write_lake_fold(tmp_path, fold)
    read = read_lake_fold(tmp_path)
    pd.testing.assert_frame_equal(read.folds, fold.folds)
    pd.testing.assert_frame_equal(read.carried, fold.carried)
    assert (read.through, read.fold_day) == (fold.through, fold.fold_day)
    # The partitions were not deleted: the next run sees them expiring again, with five more.
    again = fold_expiring(read, {k: parts[k] for k in keys[:25]}, {k: parts[k] for k in keys[25:]}, Lateness(2))
    direct = fold_expiring(LakeFold.empty(), {k: parts[k] for k in keys[:25]}, {k: parts[k] for k in keys[25:]},
                           Lateness(2))
    pd.testing.assert_frame_equal(again.folds, direct.folds)
    pd.testing.assert_frame_equal(again.carried, direct.carried)
    assert fold_expiring(read, {k: parts[k] for k in keys[:20]}, {}, Lateness(2)) is read  # nothing new


def test_a_fold_folder_without_its_manifest_is_ignored(tmp_path):
    parts = _partitions(6)
    keys = sorted(parts)
    first = fold_expiring(LakeFold.empty(), {k: parts[k] for k in keys[:10]}, {}, Lateness(2))
    write_lake_fold(tmp_path, first)
    broken = tmp_path / LAKE_FOLD / f"through={keys[19]}"
    broken.mkdir()
    (broken / "folds.parquet").write_bytes(b"cut short")
    assert read_lake_fold(tmp_path).through == keys[9]
    second = fold_expiring(read_lake_fold(tmp_path), {k: parts[k] for k in keys[:20]}, {}, Lateness(2))
    write_lake_fold(tmp_path, second)
    assert read_lake_fold(tmp_path).through == keys[19]
    assert sorted(p.name for p in (tmp_path / LAKE_FOLD).iterdir()) == [f"through={keys[19]}"]
    assert read_lake_fold(tmp_path / "elsewhere").through is None


def test_redis_tiles_written_from_the_fold_give_the_features_of_every_tile(online_redis_url):
    parts = _partitions(7)
    keys = sorted(parts)
    fold = fold_expiring(LakeFold.empty(), {k: parts[k] for k in keys[:30]}, {k: parts[k] for k in keys[30:]},
                         Lateness(2))
    client = redis.Redis.from_url(online_redis_url)
    only_folded = set(fold.folds["user_id"]) - set(fold.tiles_with(*(parts[k] for k in keys[30:]))["user_id"])
    assert only_folded, "the shop must have users whose whole history is in the fold"
    written = write_tiles(client, fold.tiles_with(*(parts[k] for k in keys[30:])), folds=fold.folds)
    assert written == len(set(merge_tiles(*parts.values())["user_id"]))
    tiles, folds = read_tiles(client, USERS)
    stamps = _stamps(keys[30], 2)
    everything = merge_tiles(*parts.values())
    assert np.array_equal(_features(snapshots_from_tiles(tiles, USERS, stamps, folds)),
                          _features(snapshots_from_tiles(everything, USERS, stamps)))
    # The lifetime money totals the apply script bounds count the folded days too.
    user = int(next(iter(only_folded)))
    assert int(client.hget(tiles_key(user), "total:revenue_micros")) == int(
        everything.loc[everything["user_id"] == user, "revenue_micros"].sum())
