"""Folded tiles: a user's final days as one running tile give bit-identical features, and keep Redis bounded."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
import redis

from feature_repo.definitions import UPLIFT_FEATURE_SERVICE, build_repo
from feature_repo.event_time import Lateness
from feature_repo.online_writer import OnlineWriter
from feature_repo.pseudonyms import lake_pseudonymizer, pseudonymize
from feature_repo.store import feature_store
from feature_repo.stream import (
    APPLIED, APPLY_LUA, FOLDED, StreamUpdater, fold_user_tiles, parse_tiles, read_tiles, seen_key, tiles_key,
    write_tiles,
)
from feature_repo.tile_fold import (
    FOLD_LUA, FoldStats, TileFolding, fold_fields, folds_frame, parse_fold, plan_folds, run_folds,
)
from feature_repo.transforms import (
    ACTIVITY_FEATURES, DECAY_PER_DAY, FOLD_COLUMNS, FOLD_DECAYED, TILE_COLUMNS, TILE_MAXES, TILE_SUMS, US_PER_DAY,
    empty_folds, event_contributions, event_tiles, fold_tiles, merge_tiles, snapshots_from_tiles,
)
from infra import keys
from serving.store.features import FeatureClient
from tests.feature_repo.factories import START, event, frame
from tests.feature_repo.test_stream import Clock, _json_event

DAY0 = int(START.value // 1000 // US_PER_DAY)
USERS = np.arange(1, 13, dtype=np.int64)


def _at(day: int, hours: float = 0.0) -> pd.Timestamp:
    return pd.Timestamp(day * US_PER_DAY, unit="us", tz="UTC") + pd.Timedelta(hours=hours)


def _random_tiles(seed: int, n_days: int = 500) -> pd.DataFrame:
    """Tiles of 12 users over `n_days`: steady, bursty (active, then hundreds of quiet days), sparse, and silent
    users; counts, money and latest times drawn at random, merged from an on-time and a late part."""
    rng = np.random.default_rng(seed)
    parts = []
    for user in USERS:
        kind = user % 4
        if kind == 0:
            continue  # never active: zeros and capped recency, folded or not
        p = {1: 0.8, 2: 0.3, 3: 0.05}[kind]
        days = DAY0 + np.flatnonzero(rng.random(n_days) < p)
        if kind == 2:  # a burst early, a burst late, a long gap between
            days = days[(days < DAY0 + 40) | (days > DAY0 + n_days - 30)]
        n = len(days)
        tile = {"user_id": np.full(n, user), "day": days}
        tile.update({c: rng.integers(0, 4, n) * (rng.random(n) < 0.7) for c in TILE_SUMS})
        tile["revenue_micros"] = rng.integers(0, 10**9, n) * (tile["purchases"] > 0)
        for c in TILE_MAXES:
            tile[c] = np.where(rng.random(n) < 0.6, days * US_PER_DAY + rng.integers(0, US_PER_DAY, n), -1)
        parts.append(pd.DataFrame(tile))
    tiles = pd.concat(parts, ignore_index=True)
    late = tiles.sample(frac=0.2, random_state=seed)  # the same days again, as late events add to them
    return merge_tiles(tiles[list(TILE_COLUMNS)], late[list(TILE_COLUMNS)])


def _features(rows: pd.DataFrame) -> np.ndarray:
    return rows[list(ACTIVITY_FEATURES)].to_numpy(np.float32)


# --- The transform: folded and unfolded tiles give the same features, bit for bit. ---

@pytest.mark.parametrize("seed", range(6))
def test_features_from_folded_tiles_are_bit_identical_at_random_stamps(seed):
    tiles = _random_tiles(seed)
    rng = np.random.default_rng(100 + seed)
    left, folds = tiles, empty_folds()
    for through in sorted(DAY0 + rng.choice(np.arange(5, 480), size=3, replace=False)):
        left, folds = fold_tiles(left, folds, int(through))
        assert (left["day"] > through).all() and (folds["fold_day"] <= through).all()
        midnights = [_at(int(d)) for d in through + 1 + rng.integers(0, 60, 6)]
        inside = [_at(int(d), float(h)) for d, h in zip(through + 1 + rng.integers(0, 60, 4), rng.uniform(0, 24, 4))]
        stamps = pd.DatetimeIndex(sorted({*midnights, *inside, _at(int(through) + 1)}))
        whole = snapshots_from_tiles(tiles, USERS, stamps)
        folded = snapshots_from_tiles(left, USERS, stamps, folds)
        assert np.array_equal(_features(folded), _features(whole))
        assert folded[["user_id", "event_timestamp"]].equals(whole[["user_id", "event_timestamp"]])
    assert len(left) < len(tiles) and set(folds["user_id"]) == set(tiles["user_id"][tiles["day"] <= through])


def test_a_fold_older_than_every_tile_left_decays_across_the_gap_exactly():
    # Active on two days, folded, then 400 quiet days, then one more day: the grid must start at the fold.
    tiles = merge_tiles(pd.DataFrame([
        {**dict.fromkeys(TILE_COLUMNS, 0), "user_id": 5, "day": DAY0 + d, "views": v, "last_visit_us": -1,
         "last_purchase_us": -1} for d, v in ((0, 3), (1, 7), (402, 2))
    ]))
    left, folds = fold_tiles(tiles, empty_folds(), DAY0 + 1)
    stamps = pd.DatetimeIndex([_at(DAY0 + 2), _at(DAY0 + 300), _at(DAY0 + 403)])
    assert np.array_equal(_features(snapshots_from_tiles(left, np.array([5]), stamps, folds)),
                          _features(snapshots_from_tiles(tiles, np.array([5]), stamps)))
    assert folds["z_views"].iloc[0] == DECAY_PER_DAY * 3.0 + 7.0


def test_the_fold_holds_the_sums_maxima_and_the_accumulators_of_a_plain_loop_over_hundreds_of_days():
    tiles = _random_tiles(7, n_days=700)
    through = DAY0 + 650
    _, folds = fold_tiles(tiles, empty_folds(), through)
    old = tiles[tiles["day"] <= through]
    for user, fold in folds.set_index("user_id").iterrows():
        mine = old[old["user_id"] == user].set_index("day")
        for column in TILE_SUMS:
            assert fold[column] == mine[column].sum()
        for column in TILE_MAXES:
            assert fold[column] == max(mine[column].max(), -1)
        for column in FOLD_DECAYED:
            counts = mine[column.removeprefix("z_")]
            z = 0.0  # the accumulator, by hand: z_d = λ·z_{d-1} + x_d from the user's first day to the fold day
            for day in range(int(mine.index.min()), through + 1):
                z = DECAY_PER_DAY * z + float(counts.get(day, 0))
            assert fold[column].hex() == z.hex()  # every bit
    assert folds.dtypes.to_dict() == empty_folds().dtypes.to_dict() and list(folds.columns) == list(FOLD_COLUMNS)


def test_folding_again_at_the_same_day_changes_nothing():
    tiles = _random_tiles(3)
    left, folds = fold_tiles(tiles, empty_folds(), DAY0 + 200)
    again_left, again = fold_tiles(left, folds, DAY0 + 200)
    pd.testing.assert_frame_equal(again, folds)
    pd.testing.assert_frame_equal(again_left, left)


def test_a_stamp_before_the_fold_is_refused_with_what_to_do():
    left, folds = fold_tiles(_random_tiles(1), empty_folds(), DAY0 + 99)
    with pytest.raises(ValueError) as refused:
        snapshots_from_tiles(left, USERS, pd.DatetimeIndex([_at(DAY0 + 100) - pd.Timedelta(microseconds=1)]), folds)
    assert str(refused.value) == (
        "stamp 2027-01-08T23:59:59.999999+00:00 is before user 1's fold: its days through 2027-01-08 are kept as one "
        "running tile, so its features exist for stamps from 2027-01-09T00:00:00+00:00 on; compute earlier stamps "
        "from the unfolded tiles (the lake's)"
    )
    snapshots_from_tiles(left, USERS, pd.DatetimeIndex([_at(DAY0 + 100)]), folds)  # the fold's own midnight: fine


def test_a_tile_behind_its_fold_and_a_second_fold_are_refused():
    tiles = _random_tiles(2)
    left, folds = fold_tiles(tiles, empty_folds(), DAY0 + 99)
    mine = tiles[tiles["user_id"] == 1]
    behind = pd.concat([left, mine[mine["day"] == mine["day"].min()]])
    with pytest.raises(ValueError, match=r"^user 1 has a tile of day 2026-10-0\d at or before its fold day 2027-01-08: "
                                         r"fold it in with fold_tiles"):
        snapshots_from_tiles(behind, USERS, pd.DatetimeIndex([_at(DAY0 + 120)]), folds)
    with pytest.raises(ValueError, match=r"^user 1 has more than one fold"):
        snapshots_from_tiles(left, USERS, pd.DatetimeIndex([_at(DAY0 + 120)]), pd.concat([folds, folds.iloc[:1]]))


def test_hash_fields_of_a_fold_round_trip_exactly_and_leave_out_zeros():
    _, folds = fold_tiles(_random_tiles(4), empty_folds(), DAY0 + 300)
    records = folds.to_dict("records")
    for record in records:
        fields = {k.encode(): v.encode() for k, v in fold_fields(record).items()}
        assert parse_fold(int(record["user_id"]), fields) == record
        assert all(v not in (b"0", b"-1") for v in fields.values())
    pd.testing.assert_frame_equal(folds_frame(records), folds)
    assert fold_fields({**records[0], "z_views": 0.1}).get("fold:z_views") == "0x1.999999999999ap-4"


# --- In Redis: the fold is atomic, idempotent, and never loses an event. ---

def _apply(client: redis.Redis, row: dict, token: str = "t") -> int:
    """One event through the stream's apply script, as `StreamUpdater._apply_tiles` sends it."""
    part = event_contributions(frame([row])).iloc[0]
    ts_us = int(pd.Timestamp(row["ts"]).value // 1000)
    args = [3600, int(part["day"]), ts_us, token, *(int(part[c]) for c in TILE_SUMS),
            *(int(part[c]) for c in TILE_MAXES)]
    return int(client.register_script(APPLY_LUA)(keys=[seen_key(row["user_id"], row["event_id"]),
                                                      tiles_key(row["user_id"])], args=args))


def test_fold_in_redis_keeps_features_and_is_idempotent(online_redis_url):
    client = redis.Redis.from_url(online_redis_url)
    tiles = _random_tiles(5)
    write_tiles(client, tiles)
    stamps = pd.DatetimeIndex([_at(DAY0 + 450), _at(DAY0 + 500, 7.5)])
    stats = fold_user_tiles(client, USERS, DAY0 + 449)
    folded_users = set(tiles["user_id"][tiles["day"] <= DAY0 + 449])
    assert (stats.users, stats.conflicts) == (len(folded_users), 0)
    assert stats.days == int((tiles["day"] <= DAY0 + 449).sum())
    stored, folds = read_tiles(client, USERS)
    assert (stored["day"] > DAY0 + 449).all() and set(folds["user_id"]) == folded_users
    assert np.array_equal(_features(snapshots_from_tiles(stored, USERS, stamps, folds)),
                          _features(snapshots_from_tiles(tiles, USERS, stamps)))
    before = {int(u): client.hgetall(tiles_key(int(u))) for u in USERS}
    again = fold_user_tiles(client, USERS, DAY0 + 449)
    assert (again.users, again.days, again.conflicts) == (0, 0, 0)
    assert {int(u): client.hgetall(tiles_key(int(u))) for u in USERS} == before


def test_the_batch_state_written_folded_equals_the_state_folded_in_redis(online_redis_url, redis_databases):
    tiles = _random_tiles(6)
    written = redis.Redis.from_url(online_redis_url)
    write_tiles(written, tiles, fold_through=DAY0 + 449)
    folded_after = redis.Redis.from_url(redis_databases.fresh())
    write_tiles(folded_after, tiles)
    fold_user_tiles(folded_after, USERS, DAY0 + 449)
    for user in tiles["user_id"].unique():
        assert written.hgetall(tiles_key(int(user))) == folded_after.hgetall(tiles_key(int(user)))
    assert written.hget(tiles_key(1), "fold:day") == str(DAY0 + 449).encode()


def test_an_event_between_read_and_fold_is_kept_or_refuses_the_fold(online_redis_url):
    client = redis.Redis.from_url(online_redis_url)
    script, stats = client.register_script(FOLD_LUA), FoldStats()
    for d in range(10):
        assert _apply(client, event(event_id=f"e{d}", user_id=8, ts=_at(DAY0 + d, 9))) == APPLIED

    def plan(through: int) -> dict:
        fields = client.hgetall(tiles_key(8))
        (args,) = plan_folds({8: (fields, parse_tiles(8, fields)[0], parse_fold(8, fields))}, through, 1).values()
        return {tiles_key(8): args}

    # An event for a folded day lands after the read: the script sees a changed day and writes nothing.
    planned = plan(DAY0 + 5)
    assert _apply(client, event(event_id="late", user_id=8, ts=_at(DAY0 + 2, 20))) == APPLIED
    changed = client.hgetall(tiles_key(8))
    assert run_folds(client, script, planned, stats) == 0 and (stats.users, stats.conflicts) == (0, 1)
    assert client.hgetall(tiles_key(8)) == changed
    # An event for a recent day lands after the read: the fold goes ahead and the event stays.
    planned = plan(DAY0 + 5)
    assert _apply(client, event(event_id="recent", user_id=8, ts=_at(DAY0 + 9, 20))) == APPLIED
    assert run_folds(client, script, planned, stats) == 1 and (stats.users, stats.days) == (1, 6)
    assert int(client.hget(tiles_key(8), f"{DAY0 + 9}:views")) == 2
    assert int(client.hget(tiles_key(8), "fold:views")) == 7  # six days, one late event
    # Now the day is folded: the apply script refuses an event for it, before writing anything.
    before = client.hgetall(tiles_key(8))
    assert _apply(client, event(event_id="later", user_id=8, ts=_at(DAY0 + 4, 1))) == FOLDED
    assert client.hgetall(tiles_key(8)) == before and client.get(seen_key(8, "later")) is None


def test_folds_racing_events_lose_nothing(online_redis_url):
    client = redis.Redis.from_url(online_redis_url)
    other = redis.Redis.from_url(online_redis_url)
    base = [event(event_id=f"b{d}", user_id=3, ts=_at(DAY0 + d, 1)) for d in range(60)]
    for row in base:
        _apply(client, row)
    rows = [event(event_id=f"r{i}", user_id=3, ts=_at(DAY0 + (i * 7) % 60, 2 + (i % 20))) for i in range(400)]
    replies: list[int] = []
    stats = FoldStats()

    def stream() -> None:
        replies.extend(_apply(other, row) for row in rows)

    fold_user_tiles(client, [3], DAY0 + 5, stats=stats)  # before the race: events for days 0-5 are refused
    thread = threading.Thread(target=stream)
    thread.start()
    while thread.is_alive():
        for through in range(DAY0 + 10, DAY0 + 55, 5):
            fold_user_tiles(client, [3], through, stats=stats)
    thread.join()
    fold_user_tiles(client, [3], DAY0 + 55, stats=stats)
    applied = [row for row, reply in zip(rows, replies) if reply == APPLIED]
    assert set(replies) <= {APPLIED, FOLDED} and len(applied) < len(rows)
    stored, folds = read_tiles(client, np.array([3]))
    assert int(folds["views"].iloc[0] + stored["views"].sum()) == len(base) + len(applied)
    expected = event_tiles(frame(base + applied))
    stamp = pd.DatetimeIndex([_at(DAY0 + 61)])
    assert np.array_equal(_features(snapshots_from_tiles(stored, np.array([3]), stamp, folds)),
                          _features(snapshots_from_tiles(expected, np.array([3]), stamp)))


# --- The streaming path: a user's hash stays bounded over years, features as if nothing were folded. ---

@pytest.fixture
def streaming(settings, online_redis_url):
    """(updater, clock, feature client, redis client) over a freshly applied Feast repo; the updater keys users by
    their pseudonym under the home's key (`updater.pseudonymizer`)."""
    store = feature_store(online_redis_url, settings)
    store.apply(build_repo(settings.data_dir).objects())
    client = redis.Redis.from_url(online_redis_url)
    clock = Clock(START)
    updater = StreamUpdater(OnlineWriter(store), client, Lateness(2), clock, folding=TileFolding(margin_days=1),
                            pseudonymizer=lake_pseudonymizer(path=keys.key_file(settings)))
    return updater, clock, FeatureClient(store, UPLIFT_FEATURE_SERVICE), client


def _day_events(day: int) -> list[dict]:
    """A view (mobile, a category per weekday), a purchase and an exposure early on `day`: 9 tile fields."""
    return [
        event(event_id=f"v{day}", user_id=21, ts=_at(day, 1), category_id=day % 8, price=10.0 + day % 5),
        event(event_id=f"p{day}", user_id=21, ts=_at(day, 2), event_type="purchase", revenue=3.0 + day % 7),
        event(event_id=f"x{day}", user_id=21, ts=_at(day, 3), event_type="promo_exposure", item_id=None,
              category_id=None, price=None, action_id="pct10_sitewide", propensity=0.5, surface="home"),
    ]


def test_three_years_of_daily_activity_keep_a_bounded_hash_and_unfolded_features(streaming):
    updater, clock, features, client = streaming
    user = updater.pseudonymizer(21)  # the lake id of the events' user 21: its tiles, refresh and row
    quiet = range(DAY0 + 400, DAY0 + 700)  # ten months without an event: only the nightly refresh runs
    sent: list[dict] = []
    reads: list[tuple[pd.Timestamp, np.ndarray]] = []
    sizes: dict[int, int] = {}
    for call, today in enumerate(range(DAY0, DAY0 + 3 * 365, 3)):
        clock.value = _at(today, 12)
        # One call per three days carries each of them (two late, as the watermark allows) and one more late view
        # of the day before yesterday (its own category: no new field); they are folded two calls later.
        batch = [e for d in (today - 2, today - 1, today) if d >= DAY0 and d not in quiet for e in _day_events(d)]
        if today - 2 >= DAY0 and today - 2 not in quiet:
            batch.append(event(event_id=f"late{today}", user_id=21, ts=_at(today - 2, 20), device="desktop",
                               category_id=(today - 2) % 8))
        if batch:
            result = updater.apply([_json_event(e) for e in batch])
            assert (result.accepted, result.rejected) == (len(batch), [])
            sent += batch
        else:
            assert updater.refresh([user]) == 1
        active = sum(1 for d in range(today - 3, today + 1) if DAY0 <= d and d not in quiet)
        sizes[today] = client.hlen(tiles_key(user))
        if today >= DAY0 + 15:  # the fold holds every category by then: 20 fields, + 3 of bookkeeping
            assert sizes[today] == 23 + 9 * active, today
        if call % 12 == 0 or today + 3 >= DAY0 + 3 * 365:
            read = features.read(user, list(ACTIVITY_FEATURES))
            assert read.event_timestamps["user_activity_fv"] == clock.value.to_pydatetime()
            reads.append((clock.value, np.asarray(read.values, dtype=np.float32)))
    assert max(sizes.values()) == 23 + 9 * 4 == 59
    # A call folds when a day it may fold (today − 4 and the two before, since the last call) had events.
    folding = [t for t in sizes if any(DAY0 <= d and d not in quiet for d in range(t - 6, t - 3))]
    assert (updater.fold_stats.users, updater.fold_stats.conflicts) == (len(folding), 0)
    assert updater.fold_stats.days == 3 * 365 - 2 - len(quiet) - 4  # every active day but the last four
    assert not client.exists(tiles_key(21))  # the raw id never reached Redis
    accepted = pseudonymize(frame(sent), updater.pseudonymizer)
    for stamp, values in reads:  # each row: the unfolded transform over every event before its stamp
        expected = snapshots_from_tiles(event_tiles(accepted[accepted["ts"] < stamp]), np.array([user]),
                                        pd.DatetimeIndex([stamp]))
        assert np.array_equal(values, _features(expected)[0]), stamp
    unfolded_days = accepted["ts"].dt.floor("D").nunique()
    assert len(reads) == 32 and 9 * unfolded_days + 3 == 7_140  # the same hash unfolded: 121 times as many fields


def test_a_writer_whose_clock_is_behind_the_fold_has_its_event_refused_and_the_row_survives(streaming):
    updater, clock, features, client = streaming
    user = updater.pseudonymizer(21)
    for today in range(DAY0, DAY0 + 12):
        clock.value = _at(today, 12)
        updater.apply([_json_event(e) for e in _day_events(today)])
    folded = int(client.hget(tiles_key(user), "fold:day"))
    assert folded == DAY0 + 12 - 1 - 4  # today − lateness − margin − 1
    row = features.read(user, list(ACTIVITY_FEATURES)).values
    clock.value = _at(folded + 1, 12)  # three days behind: its watermark admits the folded day before the last
    before = client.hgetall(tiles_key(user))
    result = updater.apply([_json_event(event(event_id="behind", user_id=21, ts=_at(folded - 1, 5)))])
    assert result.accepted == 0 and [(r["rule"], r["reason"][:60]) for r in result.rejected] == [
        ("ts.beyond_watermark", "the event's day is already folded into the user's running ti")]
    assert client.hgetall(tiles_key(user)) == before
    assert updater.refresh([user]) == 0  # a refresh on the behind clock computes (stamped after the fold) ...
    assert np.array_equal(features.read(user, list(ACTIVITY_FEATURES)).values, row)  # ... and keeps the newer row
