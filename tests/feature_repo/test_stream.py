"""The streaming path on a real Redis and real Feast: the batch contracts, exactly once, and online rows equal to
the batch transform over the events the batch accepts."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis

from feature_repo.definitions import UPLIFT_FEATURE_SERVICE, build_repo
from feature_repo.event_time import DAY, Lateness, validate_arrivals
from feature_repo.online_writer import OnlineWriter
from feature_repo.pseudonyms import lake_pseudonymizer, pseudonymize
from feature_repo.store import feature_store
from feature_repo.stream import (
    MONEY_CAP, QUARANTINE_STREAM, StreamUpdater, parse_tiles, seen_key, tiles_frame, tiles_key, write_tiles,
)
from feature_repo.transforms import (
    ACTIVITY_FEATURES, TILE_COLUMNS, US_PER_DAY, event_tiles, merge_tiles, snapshots_from_tiles,
)
from infra import keys
from serving.store.decision_log import QUARANTINE_FORMAT, StreamDrain, read_partitions
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
    """(updater, clock, store, redis client) over a freshly applied Feast repo; the updater's door is the home's
    pseudonym key (`updater.pseudonymizer`: the ids the tiles, markers and rows are keyed by)."""
    store = feature_store(online_redis_url, settings)
    store.apply(build_repo(settings.data_dir).objects())
    client = redis.Redis.from_url(online_redis_url)
    clock = Clock(START + pd.Timedelta(hours=12))
    door = lake_pseudonymizer(path=keys.key_file(settings))
    return StreamUpdater(OnlineWriter(store), client, Lateness(2), clock, pseudonymizer=door), clock, store, client


def _lake_frame(rows: list[dict], updater: StreamUpdater) -> pd.DataFrame:
    """Accepted events as a frame, through the updater's door (user ids replaced by their pseudonyms)."""
    frame = pd.DataFrame(rows)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return pseudonymize(frame, updater.pseudonymizer)


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

    # The batch's accepted events go through the door the updater's do: both are keyed by the same pseudonyms.
    accepted = pd.concat(batch_accepted, ignore_index=True)
    tiles = event_tiles(pseudonymize(accepted, updater.pseudonymizer))
    client = FeatureClient(store, UPLIFT_FEATURE_SERVICE)
    users = sorted(tiles["user_id"].unique())
    raw = set(accepted["user_id"].astype(int))
    assert not raw & {int(u) for u in users}  # the pseudonyms are no raw id of the shop (53-bit keyed hashes)
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
    lake_user = updater.pseudonymizer(7)
    assert not client.exists(tiles_key(7))  # the raw id never reaches Redis: the tiles are the pseudonym's
    tile_rows, latest = parse_tiles(lake_user, client.hgetall(tiles_key(lake_user)))
    stored = tiles_frame([tile_rows])
    frame = _lake_frame(rows, updater)
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
    user = updater.pseudonymizer(3)  # the row is the pseudonym's
    updater.apply([_json_event(event(event_id="now", user_id=3, ts=START + 2 * DAY))])
    before = client.read(user, list(ACTIVITY_FEATURES))
    updater.apply([_json_event(event(event_id="late", user_id=3, ts=START + pd.Timedelta(hours=2)))])
    after = client.read(user, list(ACTIVITY_FEATURES))
    assert before.by_name["page_views_total"] == 1.0 and after.by_name["page_views_total"] == 2.0
    assert after.event_timestamps == before.event_timestamps  # the stamp is `now`: equal, and still written
    clock.value = START + pd.Timedelta(hours=3)  # a worker with a clock behind: its row is older, refused
    updater.apply([_json_event(event(event_id="behind", user_id=3, ts=START + pd.Timedelta(hours=2, minutes=30)))])
    assert client.read(user, list(ACTIVITY_FEATURES)).by_name["page_views_total"] == 2.0


def test_a_refresh_rolls_rows_forward_to_now_as_the_batch_transform_does(streaming):
    updater, clock, store, _ = streaming
    client = FeatureClient(store, UPLIFT_FEATURE_SERVICE)
    rows = [event(event_id=f"r{i}", user_id=u, ts=START + pd.Timedelta(hours=i)) for i, u in enumerate((4, 4, 5))]
    updater.apply([_json_event(r) for r in rows])
    clock.value = START + 3 * DAY  # two quiet days later: no event, the rows must still move (decays, recency)
    four, five = updater.pseudonymizer(4), updater.pseudonymizer(5)  # refresh takes lake ids, as the tiles keep them
    assert updater.refresh([four, five, four]) == 2
    frame = _lake_frame(rows, updater)
    expected = snapshots_from_tiles(merge_tiles(event_tiles(frame)), np.array(sorted([four, five])),
                                    pd.DatetimeIndex([clock.value]))
    for user in (four, five):
        read = client.read(user, list(ACTIVITY_FEATURES))
        assert read.event_timestamps["user_activity_fv"] == clock.value.to_pydatetime()
        row = expected.loc[expected["user_id"] == user, list(ACTIVITY_FEATURES)].iloc[0]
        assert [read.by_name[f] for f in ACTIVITY_FEATURES] == pytest.approx(row.astype(float).tolist(), rel=1e-6)


# --- Atomic application: bounded money, one atomic step per event, a failed call repeated to the clean state. ---

def _call(now: pd.Timestamp) -> list[dict]:
    """One call's events: three users, every event type, a bad event, a copy within the call, no `device` field."""
    rows = [
        event(event_id="v1", user_id=21, ts=now - pd.Timedelta(hours=3), price=19.99),
        event(event_id="v2", user_id=21, ts=now - pd.Timedelta(days=1), price=5.25, category_id=6),
        event(event_id="p1", user_id=22, event_type="purchase", ts=now - pd.Timedelta(hours=2), revenue=42.5,
              action_id="pct10_sitewide"),
        event(event_id="x1", user_id=23, event_type="promo_exposure", ts=now - pd.Timedelta(hours=1), item_id=None,
              category_id=None, price=None, action_id="push_reminder", propensity=0.3, surface="home"),
        event(event_id="c1", user_id=23, event_type="add_to_cart", ts=now - pd.Timedelta(minutes=30)),
        event(event_id="bad", user_id=22, ts=now - pd.Timedelta(hours=1), price=9.3e12),
        event(event_id="v3", user_id=22, ts=now - pd.Timedelta(hours=4), device=None, region=None),
    ]
    events = [_json_event(r) for r in rows]
    return events + [events[0]]  # the same event twice in one call


def _state(client: redis.Redis) -> dict:
    """Everything the call left in Redis: tiles, seen markers (value, and whether they expire), the online rows, and
    the quarantine's records (their ids included: a digest of the call, the event's position and rule)."""
    state = {}
    for key in sorted(client.keys("*")):
        kind = client.type(key)
        if kind == b"hash":
            state[key] = client.hgetall(key)
        elif kind == b"string":
            state[key] = (client.get(key), client.ttl(key) > 0)
        elif kind == b"stream":
            records = [json.loads(fields[b"record"]) for _, fields in client.xrange(key)]
            state[key] = records
        else:
            raise AssertionError(f"unexpected key {key!r} of type {kind!r}")
    return state


def _summary(result) -> tuple:
    return result.accepted, result.rejected, result.users_updated, result.rows_written


class Fault(redis.exceptions.ConnectionError):
    """The injected failure: Redis went away between (or within) the steps of a call."""


def _inject(updater: StreamUpdater, monkeypatch, where: str) -> None:
    """Make the next call fail at `where`, once; the steps before it have run, those after it have not."""
    if where == "tiles part-way":  # the connection dropped after Redis ran the first 3 of the call's scripts
        original = updater._apply_tiles

        def apply_some(accepted, token):
            original(accepted.iloc[:3], token)
            monkeypatch.setattr(updater, "_apply_tiles", original)
            raise Fault("connection lost while applying tiles")

        monkeypatch.setattr(updater, "_apply_tiles", apply_some)
    elif where == "before the rows":
        original_rows = updater._write_rows

        def no_rows(users, now):
            monkeypatch.setattr(updater, "_write_rows", original_rows)
            raise Fault("connection lost before the rows")

        monkeypatch.setattr(updater, "_write_rows", no_rows)
    elif where == "rows part-way":  # the first user's row written, the others not
        writer, original_write = updater.writer, updater.writer.write

        def write_some(view, frame, mode):
            original_write(view, frame.iloc[:1], mode=mode)
            monkeypatch.setattr(writer, "write", original_write)
            raise Fault("connection lost while writing rows")

        monkeypatch.setattr(writer, "write", write_some)
    elif where == "before the finish":  # rows written; the quarantine and the markers' MULTI never reached Redis
        original_finish = updater._finish

        def no_finish(*args):
            monkeypatch.setattr(updater, "_finish", original_finish)
            raise Fault("connection lost before the finish")

        monkeypatch.setattr(updater, "_finish", no_finish)
    elif where == "finish part-way":  # the quarantine appended, the markers' write lost
        original_finish = updater._finish

        def quarantine_only(rejected, events, now, ours):
            original_finish(rejected, events, now, ours.iloc[:0])
            monkeypatch.setattr(updater, "_finish", original_finish)
            raise Fault("connection lost before the markers")

        monkeypatch.setattr(updater, "_finish", quarantine_only)
    else:
        raise ValueError(where)


def test_a_clean_call_counts_every_event_once_and_marks_its_events_answered(streaming):
    updater, clock, _, client = streaming
    clock.value = START + pd.Timedelta(days=1, hours=12)
    events = _call(clock.value)
    result = updater.apply(events)
    assert _summary(result) == (6, [
        {"index": 5, "event_id": "bad", "rule": "price.range", "reason": "price must be <= 1000000.0"},
        {"index": 7, "event_id": "v1", "rule": "event_id.unique", "reason": "duplicate event_id"},
    ], 3, 3)
    assert result.accepted + len(result.rejected) == len(events)  # in = accepted + quarantined
    assert client.xlen(QUARANTINE_STREAM) == 2
    markers = {key: client.get(key) for key in client.keys("hyperlift:seen:*")}
    assert sorted(markers) == sorted(seen_key(updater.pseudonymizer(u), e).encode() for u, e in (
        (21, "v1"), (21, "v2"), (22, "p1"), (22, "v3"), (23, "x1"), (23, "c1")))
    # Below the door nothing is keyed by a raw id: every tile hash is a pseudonym's.
    assert sorted(client.keys("hyperlift:tiles:*")) == sorted(
        tiles_key(updater.pseudonymizer(u)).encode() for u in (21, 22, 23))
    assert set(markers.values()) == {b"1"}


@pytest.mark.parametrize("where", ["tiles part-way", "before the rows", "rows part-way", "before the finish"])
def test_a_call_that_fails_at_any_step_and_is_sent_again_ends_as_one_clean_call(streaming, monkeypatch, where):
    updater, clock, _, client = streaming
    clock.value = START + pd.Timedelta(days=1, hours=12)
    events = _call(clock.value)
    clean = _summary(updater.apply(events))
    clean_state = _state(client)
    client.flushdb()  # Feast keeps nothing in Redis but the rows: an empty online store again

    _inject(updater, monkeypatch, where)
    with pytest.raises(Fault):
        updater.apply(events)
    assert client.xlen(QUARANTINE_STREAM) == 0  # nothing counted yet: the failed call was not answered
    repeat = updater.apply(events)
    assert _summary(repeat) == clean  # the events the failed attempt applied count as accepted, once
    assert repeat.accepted + len(repeat.rejected) == len(events) == client.xlen(QUARANTINE_STREAM) + repeat.accepted
    assert _state(client) == clean_state  # tiles, markers, rows and quarantine, byte for byte
    again = updater.apply(events)  # after an answered call, the same events are replays
    assert again.accepted == 0 and {r["rule"] for r in again.rejected} == {"event_id.unique", "price.range"}


def test_a_call_that_fails_between_quarantine_and_markers_is_repeated_and_the_lake_keeps_each_refusal_once(
    streaming, monkeypatch, tmp_path,
):
    updater, clock, _, client = streaming
    clock.value = START + pd.Timedelta(days=1, hours=12)
    events = _call(clock.value)
    clean = _summary(updater.apply(events))
    clean_state = _state(client)
    clean_lake = _drained_quarantine(client, tmp_path / "clean")
    client.flushdb()

    _inject(updater, monkeypatch, "finish part-way")
    with pytest.raises(Fault):
        updater.apply(events)
    assert client.xlen(QUARANTINE_STREAM) == 2  # the refusals are kept; the markers still hold the call's token
    repeat = updater.apply(events)
    assert _summary(repeat) == clean
    state = _state(client)
    quarantine = state.pop(QUARANTINE_STREAM.encode())
    assert quarantine == clean_state.pop(QUARANTINE_STREAM.encode()) * 2  # the same two records, appended twice
    assert state == clean_state  # tiles, markers and rows as one clean call left them
    lake = _drained_quarantine(client, tmp_path / "repeat")
    assert len(lake) == 2 and lake.equals(clean_lake)  # the lake keeps each refused event once


def _drained_quarantine(client: redis.Redis, lake: Path) -> pd.DataFrame:
    """The quarantine stream drained into a lake folder and read back as the pipeline reads it (without the Redis
    entry ids, which differ between runs)."""
    StreamDrain(client, QUARANTINE_STREAM, "test", "test", lake, QUARANTINE_FORMAT).drain()
    frame = read_partitions(lake, record_format=QUARANTINE_FORMAT).drop(columns="stream_id")
    return frame.sort_values("quarantine_id", ignore_index=True)


def test_an_unfinished_call_that_is_never_repeated_leaves_replays_that_still_rewrite_the_row(streaming, monkeypatch):
    updater, clock, store, client = streaming
    clock.value = START + pd.Timedelta(days=1, hours=12)
    first = [_json_event(event(event_id="u1", user_id=31, ts=clock.value - pd.Timedelta(hours=1)))]
    _inject(updater, monkeypatch, "before the rows")
    with pytest.raises(Fault):
        updater.apply(first)
    reader = FeatureClient(store, UPLIFT_FEATURE_SERVICE)
    user = updater.pseudonymizer(31)
    assert reader.read(user, list(ACTIVITY_FEATURES)).event_timestamps["user_activity_fv"] is None  # the row is stale
    other = updater.apply(first + [_json_event(event(event_id="u2", user_id=32, ts=clock.value))])  # another call
    assert other.accepted == 1 and [r["rule"] for r in other.rejected] == ["event_id.unique"]
    assert reader.read(user, list(ACTIVITY_FEATURES)).by_name["page_views_total"] == 1.0  # rewritten all the same


def test_money_is_bounded_by_the_contract_and_a_full_tile_refuses_the_event_without_touching_anything(streaming):
    updater, clock, _, client = streaming
    clock.value = START + pd.Timedelta(days=1, hours=12)
    ts = clock.value - pd.Timedelta(hours=1)
    huge = [
        _json_event(event(event_id="h1", user_id=41, ts=ts, price=9.2e12)),
        _json_event(event(event_id="h2", user_id=41, ts=ts, event_type="purchase", revenue=1e300)),
        _json_event(event(event_id="h3", user_id=41, ts=ts, event_type="purchase", revenue=float("inf"))),
    ]
    result = updater.apply(huge)
    assert result.accepted == 0 and [(r["rule"], r["reason"]) for r in result.rejected] == [
        ("price.range", "price must be <= 1000000.0"), ("revenue.range", "revenue must be <= 1000000.0"),
        ("revenue.range", "revenue must be <= 1000000.0"),
    ]
    assert client.keys("hyperlift:tiles:*") == []
    # A user whose lifetime revenue is 1 micro-unit short of the cap (the batch handed it over so): a purchase that
    # would pass 2^53 is refused whole; one that fits is applied.
    user = updater.pseudonymizer(42)  # the batch hands over tiles keyed by the lake id
    near = pd.DataFrame([{**dict.fromkeys(TILE_COLUMNS, 0), "user_id": user, "day": 20_000, "purchases": 1,
                          "revenue_micros": MONEY_CAP - 1_000_000, "last_visit_us": -1, "last_purchase_us": 1}])
    write_tiles(client, near[list(TILE_COLUMNS)])
    before = client.hgetall(tiles_key(user))
    assert before[b"total:revenue_micros"] == str(MONEY_CAP - 1_000_000).encode()
    buy = [_json_event(event(event_id="b1", user_id=42, ts=ts, event_type="purchase", revenue=1.000001))]
    refused = updater.apply(buy)
    assert refused.accepted == 0 and refused.rejected == [{
        "index": 0, "event_id": "b1", "rule": "revenue.capacity",
        "reason": "the user's lifetime sum of revenue would pass 9,007,199,254.740992 (9007199254740992 micro-units), "
                  "the most its tiles sum exactly; the event is kept here, not applied",
    }]
    assert client.hgetall(tiles_key(user)) == before and client.get(seen_key(user, "b1")) is None
    fits = updater.apply([{**buy[0], "event_id": "b2", "revenue": 1.0}])
    assert fits.accepted == 1
    assert int(client.hget(tiles_key(user), b"total:revenue_micros")) == MONEY_CAP
    day = int(pd.Timestamp(ts).value // 1000 // US_PER_DAY)
    assert int(client.hget(tiles_key(user), f"{day}:revenue_micros")) == 1_000_000
    assert not client.exists(tiles_key(42))
