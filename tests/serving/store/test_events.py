"""POST /v1/events against real Redis, Feast and MLflow: streamed events continue the batch's state, the online row
equals the batch transform, bad input gets a 4xx with the contract rule, faults a 503."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient

from feature_repo.contracts import validate_events
from feature_repo.definitions import UPLIFT_FEATURE_SERVICE
from feature_repo.pseudonyms import pseudonymize
from feature_repo.stream import QUARANTINE_STREAM, seen_key, tiles_key, write_tiles
from feature_repo.transforms import ACTIVITY_FEATURES, event_tiles, merge_tiles, snapshots_from_tiles
from serving.store.features import FeatureClient
from serving.main import create_app
from simulator import build_shop, simulate_events
from tests.lake_ids import door, lake_id
from tests.serving.conftest import SHOP

END = pd.Timestamp(SHOP.end)  # the service's clock (HYPERLIFT_SERVING_NOW, tests/serving/conftest.py)


@pytest.fixture(scope="module")
def batch_tiles(served_world) -> pd.DataFrame:
    """The tiles of the events the batch accepted for the served shop, loaded into Redis as the pipeline does (keyed
    by the users' pseudonyms under the home's key); returned by raw id, what the streamed events carry."""
    settings, redis_url, _ = served_world
    accepted = validate_events(simulate_events(build_shop(SHOP)), END).accepted
    tiles = event_tiles(accepted)
    write_tiles(redis.Redis.from_url(redis_url), pseudonymize(tiles, door(settings)))
    return tiles


@pytest.fixture
def client(serving_settings, batch_tiles):
    with TestClient(create_app(serving_settings)) as test_client:
        yield test_client


def page_view(event_id: str, user: int, ts: pd.Timestamp, **fields) -> dict:
    return {"event_id": event_id, "event_type": "page_view", "event_version": 1, "ts": ts.isoformat(),
            "user_id": user, "session_id": f"s-{event_id}", "item_id": 3, "category_id": 4, "price": 12.5,
            "device": "mobile", "region": "south", **fields}


def online(client: TestClient, settings, user: int):
    """The online activity row of raw id `user`: stored by its pseudonym under the home's key."""
    store = client.app.state.runtime.events.updater.writer.store
    return FeatureClient(store, UPLIFT_FEATURE_SERVICE).read(lake_id(settings, user), list(ACTIVITY_FEATURES))


def quarantined(redis_url: str, n: int) -> list[dict]:
    """The last `n` records of the quarantine stream, oldest first."""
    entries = redis.Redis.from_url(redis_url).xrevrange(QUARANTINE_STREAM, count=n)
    return [json.loads(fields[b"record"]) for _, fields in reversed(entries)]


def test_a_streamed_event_adds_to_the_batch_state_and_the_row_equals_the_batch_transform(
    client, batch_tiles, served_world
):
    settings, redis_url, _ = served_world
    user = int(batch_tiles["user_id"].iloc[0])
    before = online(client, settings, user)
    assert before.found
    events = [page_view("s1", user, END - pd.Timedelta(hours=2)), page_view("s2", user, END - pd.Timedelta(days=1, hours=3))]
    response = client.post("/v1/events", json={"events": events})
    assert response.status_code == 202
    assert response.json() == {"accepted": 2, "rejected": [], "users_updated": 1, "rows_written": 1}
    after = online(client, settings, user)
    assert after.by_name["page_views_total"] == before.by_name["page_views_total"] + 2
    # Tiles, seen markers and the row are keyed by the user's pseudonym; the raw id reaches no key.
    pseudonym = lake_id(settings, user)
    assert pseudonym != user
    store = redis.Redis.from_url(redis_url)
    assert store.exists(tiles_key(pseudonym)) and not store.exists(tiles_key(user))
    assert all(store.exists(seen_key(pseudonym, e)) and not store.exists(seen_key(user, e)) for e in ("s1", "s2"))
    assert not FeatureClient(client.app.state.runtime.events.updater.writer.store, UPLIFT_FEATURE_SERVICE).read(
        user, list(ACTIVITY_FEATURES)).found
    streamed = pd.DataFrame(events).assign(ts=lambda f: pd.to_datetime(f["ts"], utc=True))
    for name in ("item_id", "category_id", "user_id", "event_version"):
        streamed[name] = streamed[name].astype("Int64")
    for name in ("revenue", "propensity", "action_id", "surface"):
        streamed[name] = None
    expected = snapshots_from_tiles(merge_tiles(batch_tiles, event_tiles(streamed)), np.array([user]),
                                    pd.DatetimeIndex([END]))
    np.testing.assert_array_equal(after.values, expected[list(ACTIVITY_FEATURES)].to_numpy(np.float32)[0])
    assert after.event_timestamps["user_activity_fv"] == END.to_pydatetime()
    decision = client.post("/v1/decisions", json={"user_id": user, "surface": "home"}).json()
    assert decision["fallback"] is None  # the streamed row is fresh by the view's contract
    metrics = client.get("/metrics").text
    assert "hyperlift_events_accepted_total 2.0" in metrics


def test_a_replay_is_200_and_a_bad_event_is_422_with_its_rule(client, batch_tiles, served_world):
    settings, redis_url, _ = served_world
    user = int(batch_tiles["user_id"].iloc[1])
    event = page_view("r1", user, END - pd.Timedelta(hours=1))
    assert client.post("/v1/events", json={"events": [event]}).status_code == 202
    replay = client.post("/v1/events", json={"events": [event]})
    assert replay.status_code == 200
    assert replay.json()["rejected"] == [
        {"index": 0, "event_id": "r1", "rule": "event_id.unique", "reason": "duplicate of an event accepted earlier"}
    ]
    cases = [
        ({**event, "event_id": "b1", "user_id": "alice"}, "user_id.type"),
        ({**event, "event_id": "b2", "event_type": "teleport"}, "event_type.known"),
        ({**event, "event_id": "b3", "ts": (END + pd.Timedelta(hours=1)).isoformat()}, "ts.not_future"),
        ({**event, "event_id": "b4", "ts": (END - pd.Timedelta(days=4)).isoformat()}, "ts.beyond_watermark"),
        ({**event, "event_id": "b5", "event_type": "purchase", "revenue": -3.0}, "revenue.range"),
        ({k: v for k, v in event.items() if k != "ts"} | {"event_id": "b6"}, "ts.required"),
    ]
    for bad, rule in cases:
        response = client.post("/v1/events", json={"events": [bad]})
        assert response.status_code == 422, rule
        assert [r["rule"] for r in response.json()["detail"]["rejected"]] == [rule]
    counted = client.get("/metrics").text
    assert 'hyperlift_events_rejected_total{rule="ts.beyond_watermark"} 1.0' in counted
    # The accepted event's marker is the pseudonym's; the refused ones are quarantined as received: raw ids.
    store = redis.Redis.from_url(redis_url)
    assert store.exists(seen_key(lake_id(settings, user), "r1")) and not store.exists(seen_key(user, "r1"))
    kept = quarantined(redis_url, len(cases))
    assert [r["event_id"] for r in kept] == [bad.get("event_id") for bad, _ in cases]
    assert [r["event"]["user_id"] for r in kept] == [bad["user_id"] for bad, _ in cases]


def test_malformed_and_oversized_calls_are_refused_before_the_contracts(client, batch_tiles):
    assert client.post("/v1/events", json={"events": []}).status_code == 422
    assert client.post("/v1/events", json={"events": ["not an object"]}).status_code == 422
    assert client.post("/v1/events", json={"event": {}}).status_code == 422
    many = [page_view(f"m{i}", 1, END - pd.Timedelta(hours=1)) for i in range(501)]
    response = client.post("/v1/events", content=b'{"events": [' + b",".join([b'{"a": 1}'] * 501) + b"]}",
                           headers={"content-type": "application/json"})
    assert response.status_code == 422 and "at most 500" in response.text
    assert client.post("/v1/events", json={"events": many}).status_code == 413  # over the 64 kB body limit


def test_redis_failing_gives_503_and_is_counted(client, batch_tiles):
    runtime = client.app.state.runtime
    runtime.events.updater.client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.05, retry=None)
    response = client.post("/v1/events", json={"events": [page_view("f1", 2, END - pd.Timedelta(hours=1))]})
    assert response.status_code == 503 and "retry" in response.json()["detail"]
    assert "hyperlift_event_batches_failed_total 1.0" in client.get("/metrics").text


def test_a_call_that_fails_part_way_is_a_503_and_its_retry_applies_it_once_rows_included(
    client, batch_tiles, served_world
):
    settings = served_world[0]
    runtime = client.app.state.runtime
    updater = runtime.events.updater
    users = [int(u) for u in batch_tiles["user_id"].unique()[2:5]]
    before = {u: online(client, settings, u).by_name["page_views_total"] for u in users}
    events = [page_view(f"m{u}", u, END - pd.Timedelta(hours=1)) for u in users]
    events.append({**events[0], "event_id": "m-bad", "price": 9.2e12})
    original = updater._write_rows
    calls = []

    def fail_once(users_, now):  # Redis goes away after the tiles were applied, before any row is written
        calls.append(users_)
        if len(calls) == 1:
            raise redis.exceptions.ConnectionError("connection lost before the rows")
        return original(users_, now)

    updater._write_rows = fail_once
    failed = client.post("/v1/events", json={"events": events})
    assert failed.status_code == 503
    assert failed.json()["detail"] == "events not applied, retry the same call (it is applied once): Redis " \
                                      "connection failed (ConnectionError)"  # not the error's text (docs/security.md)
    assert [online(client, settings, u).by_name["page_views_total"] for u in users] == [before[u] for u in users]  # stale
    retry = client.post("/v1/events", json={"events": events})
    assert retry.status_code == 202
    assert retry.json() == {"accepted": 3, "users_updated": 3, "rows_written": 3, "rejected": [
        {"index": 3, "event_id": "m-bad", "rule": "price.range", "reason": "price must be <= 1000000.0"}]}
    assert [online(client, settings, u).by_name["page_views_total"] for u in users] == [before[u] + 1 for u in users]
    metrics = client.get("/metrics").text  # in = accepted + quarantined, counted once
    assert "hyperlift_events_accepted_total 3.0" in metrics
    assert 'hyperlift_events_rejected_total{rule="price.range"} 1.0' in metrics
    assert "hyperlift_event_batches_failed_total 1.0" in metrics
    replay = client.post("/v1/events", json={"events": events[:3]})
    assert replay.status_code == 200 and [r["rule"] for r in replay.json()["rejected"]] == ["event_id.unique"] * 3
