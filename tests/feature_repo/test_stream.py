"""The streaming path on a real Redis and real Feast: the batch contracts, exactly once, and online rows equal to
the batch transform over the events the batch accepts."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
import redis

from feature_repo.definitions import UPLIFT_FEATURE_SERVICE, build_repo
from feature_repo.event_time import DAY, Lateness, validate_arrivals
from feature_repo.online_writer import OnlineWriter
from feature_repo.store import feature_store
from feature_repo.stream import QUARANTINE_STREAM, StreamUpdater, parse_tiles, tiles_frame, tiles_key
from feature_repo.transforms import ACTIVITY_FEATURES, event_tiles, merge_tiles, snapshots_from_tiles
from serving.store.features import FeatureClient
from simulator import ShopConfig, build_shop, simulate_events
from simulator.arrival import arrival_days
from tests.feature_repo.factories import START, event

SHOP = ShopConfig(n_users=200, n_items=40, n_days=5, seed=13, corrupt_rate=0.01)


class Clock:
    """A settable clock for the updater (the arrival time of the events)."""

    def __init__(self, now: pd.Timestamp):
        self.value = now

    def __call__(self) -> pd.Timestamp:
        return self.value


@pytest.fixture
def streaming(settings, online_redis_url):
    """(updater, clock, store, redis client) over a freshly applied Feast repo."""
    store = feature_store(online_redis_url, settings)
    store.apply(build_repo(settings.data_dir).objects())
    client = redis.Redis.from_url(online_redis_url)
    clock = Clock(START + pd.Timedelta(hours=12))
    return StreamUpdater(OnlineWriter(store), client, Lateness(2), clock), clock, store, client


def _json_event(row: dict) -> dict:
    """A raw event as a client would send it: JSON types, timestamps as ISO strings, no nulls."""
    out = {}
    for name, value in row.items():
        if not isinstance(value, (list, dict)) and pd.isna(value):  # None, NaN, NaT, <NA>: the field is absent
            continue
        out[name] = value.isoformat() if isinstance(value, pd.Timestamp) else (
            int(value) if isinstance(value, (np.integer,)) else float(value) if isinstance(value, np.floating) else value
        )
    return out


def test_streamed_shop_equals_the_batch_transform_over_the_batch_accepted_events(streaming):
    updater, clock, store, _ = streaming
    raw = simulate_events(build_shop(SHOP))
    arrival = arrival_days(raw, SHOP)
    lateness, rnd = Lateness(2), random.Random(4)
    seen = pd.Index([], dtype="string")
    batch_accepted, batch_rules, stream_rules = [], {}, {}
    for day in sorted(arrival.unique()):
        part = raw.loc[arrival == day].reset_index(drop=True)
        result = validate_arrivals(part, day, lateness, seen)
        seen = seen.append(pd.Index(result.accepted["event_id"], dtype="string"))
        batch_accepted.append(result.accepted)
        for rule, n in result.rule_counts.items():
            batch_rules[rule] = batch_rules.get(rule, 0) + n
        # The same day's events as a client sends them: shuffled, in batches of up to 150.
        events = [_json_event(r) for r in part.to_dict("records")]
        rnd.shuffle(events)
        clock.value = day + DAY - pd.Timedelta(microseconds=1)  # they arrive during that day
        for start in range(0, len(events), 150):
            for rule, n in updater.apply(events[start:start + 150]).rule_counts().items():
                stream_rules[rule] = stream_rules.get(rule, 0) + n
    assert stream_rules == batch_rules
    assert batch_rules.get("ts.beyond_watermark", 0) > 0 and batch_rules.get("event_id.unique", 0) > 0

    tiles = event_tiles(pd.concat(batch_accepted, ignore_index=True))
    client = FeatureClient(store, UPLIFT_FEATURE_SERVICE)
    users = sorted(tiles["user_id"].unique())
    compared = 0
    for user in users:
        read = client.read(int(user), list(ACTIVITY_FEATURES))
        stamp = pd.Timestamp(read.event_timestamps["user_activity_fv"])
        expected = snapshots_from_tiles(tiles, np.array([user]), pd.DatetimeIndex([stamp]))
        np.testing.assert_array_equal(read.values, expected[list(ACTIVITY_FEATURES)].to_numpy(np.float32)[0])
        compared += 1
    assert compared == len(users) > 100


def test_the_tiles_in_redis_equal_the_batch_tiles(streaming):
    updater, _, _, client = streaming
    rows = [event(event_id=f"e{i}", user_id=7, ts=START + pd.Timedelta(minutes=37 * i), price=1.1 * i,
                  category_id=i % 8, device="mobile" if i % 3 else "desktop") for i in range(1, 12)]
    events = [_json_event(r) for r in rows]
    updater.apply(events[6:])
    updater.apply(events[:6] + events[2:4])  # replays of two events in a later call
    tile_rows, latest = parse_tiles(7, client.hgetall(tiles_key(7)))
    stored = tiles_frame([tile_rows])
    frame = pd.DataFrame(rows)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    pd.testing.assert_frame_equal(stored, merge_tiles(event_tiles(frame)))
    assert latest == int(frame["ts"].max().value // 1000)


def test_rejections_carry_the_rule_and_the_event_is_kept_in_the_quarantine_stream(streaming):
    updater, clock, _, client = streaming
    ok = _json_event(event(event_id="ok", ts=START + pd.Timedelta(hours=1)))
    events = [
        ok,
        {**ok, "event_id": "type", "user_id": "abc"},
        {**ok, "event_id": "kind", "event_type": "teleport"},
        {**ok, "event_id": "future", "ts": (START + pd.Timedelta(days=2)).isoformat()},
        {**ok, "event_id": "late", "ts": (START - pd.Timedelta(days=3)).isoformat()},
        {**_json_event(event(event_id="neg", event_type="purchase", revenue=-5.0))},
        {key: v for key, v in ok.items() if key != "session_id"} | {"event_id": "missing"},
        ok,  # the same event twice in one call
    ]
    result = updater.apply(events)
    assert result.accepted == 1 and result.users_updated == 1 and result.rows_written == 1
    assert [(r["index"], r["event_id"], r["rule"]) for r in result.rejected] == [
        (1, "type", "user_id.type"), (2, "kind", "event_type.known"), (3, "future", "ts.not_future"),
        (4, "late", "ts.beyond_watermark"), (5, "neg", "revenue.range"), (6, "missing", "session_id.required"),
        (7, "ok", "event_id.unique"),
    ]
    again = updater.apply([ok])
    assert again.accepted == 0 and again.rejected == [
        {"index": 0, "event_id": "ok", "rule": "event_id.unique", "reason": "duplicate of an event accepted earlier"}
    ]
    records = [json.loads(fields[b"record"]) for _, fields in client.xrange(QUARANTINE_STREAM)]
    assert len(records) == 8
    assert records[0]["rule"] == "user_id.type" and records[0]["event"]["user_id"] == "abc"
    assert records[-1]["event"] == ok and records[-1]["event_id"] == "ok"
    assert records[0]["ts"] == clock.value.timestamp() and len({r["quarantine_id"] for r in records}) == 8


def test_a_late_event_rewrites_the_row_and_an_older_row_never_replaces_it(streaming):
    updater, clock, store, _ = streaming
    client = FeatureClient(store, UPLIFT_FEATURE_SERVICE)
    clock.value = START + 2 * DAY + pd.Timedelta(hours=1)
    updater.apply([_json_event(event(event_id="now", user_id=3, ts=START + 2 * DAY))])
    before = client.read(3, list(ACTIVITY_FEATURES))
    updater.apply([_json_event(event(event_id="late", user_id=3, ts=START + pd.Timedelta(hours=2)))])
    after = client.read(3, list(ACTIVITY_FEATURES))
    assert before.by_name["page_views_total"] == 1.0 and after.by_name["page_views_total"] == 2.0
    assert after.event_timestamps == before.event_timestamps  # the stamp is `now`: equal, and still written
    clock.value = START + pd.Timedelta(hours=3)  # a worker with a clock behind: its row is older, refused
    updater.apply([_json_event(event(event_id="behind", user_id=3, ts=START + pd.Timedelta(hours=2, minutes=30)))])
    assert client.read(3, list(ACTIVITY_FEATURES)).by_name["page_views_total"] == 2.0


def test_a_refresh_rolls_rows_forward_to_now_as_the_batch_transform_does(streaming):
    updater, clock, store, _ = streaming
    client = FeatureClient(store, UPLIFT_FEATURE_SERVICE)
    rows = [event(event_id=f"r{i}", user_id=u, ts=START + pd.Timedelta(hours=i)) for i, u in enumerate((4, 4, 5))]
    updater.apply([_json_event(r) for r in rows])
    clock.value = START + 3 * DAY  # two quiet days later: no event, the rows must still move (decays, recency)
    assert updater.refresh([4, 5, 4]) == 2
    frame = pd.DataFrame(rows)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    expected = snapshots_from_tiles(merge_tiles(event_tiles(frame)), np.array([4, 5]), pd.DatetimeIndex([clock.value]))
    for user in (4, 5):
        read = client.read(user, list(ACTIVITY_FEATURES))
        assert read.event_timestamps["user_activity_fv"] == clock.value.to_pydatetime()
        row = expected.loc[expected["user_id"] == user, list(ACTIVITY_FEATURES)].iloc[0]
        assert [read.by_name[f] for f in ACTIVITY_FEATURES] == pytest.approx(row.astype(float).tolist(), rel=1e-6)
