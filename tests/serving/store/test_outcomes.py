"""Outcomes: stored once per idempotency key (a retry is a duplicate, the lake counts it once even after the claim
expired), refused for decisions the service never answered, and a refused append leaves nothing claimed."""

from __future__ import annotations

import json
import uuid

import pytest
import redis
from redis.crc import key_slot
from fastapi.testclient import TestClient

from serving.core.schemas import OutcomeRequest
from serving.decision.identity import issued_decision_id, new_decision_id
from serving.main import create_app
from serving.store.decision_log import OUTCOME_FORMAT, StreamDrain, read_partitions
from serving.store.outcomes import OutcomeLog, OutcomeRejected, claim_key

SALT = "outcome-test-salt"
NOW = 1_790_000_000.0
STREAM = "hyperlift:outcomes"


@pytest.fixture
def store(online_redis_url) -> tuple[OutcomeLog, redis.Redis]:
    client = redis.Redis.from_url(online_redis_url)
    return OutcomeLog(client, STREAM, SALT, clock=lambda: NOW, ttl_s=3600), client


def records(client: redis.Redis, stream: str = STREAM) -> list[dict]:
    return [json.loads(fields[b"record"]) for _, fields in client.xrange(stream)]


def test_decision_ids_carry_a_check_under_the_salt():
    ids = {new_decision_id(SALT) for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert all(issued_decision_id(i, SALT) for i in ids)
    assert not any(issued_decision_id(i, "another-salt") for i in ids)
    assert sum(issued_decision_id(uuid.uuid4().hex, SALT) for _ in range(1000)) == 0


def test_without_a_key_every_call_is_a_new_outcome(store):
    log, client = store
    outcome = OutcomeRequest(user_id=7, revenue=3.0)
    first, second = log.record(outcome), log.record(outcome)
    assert first.outcome_id != second.outcome_id and not first.duplicate and not second.duplicate
    assert len(records(client)) == 2


def test_a_retry_with_the_same_key_is_a_duplicate_stored_once(store):
    log, client = store
    outcome = OutcomeRequest(decision_id=new_decision_id(SALT), revenue=12.5)
    first = log.record(outcome, idempotency_key="order-1", client="shop")
    again = log.record(outcome, idempotency_key="order-1", client="shop")
    assert not first.duplicate and again.duplicate and again.outcome_id == first.outcome_id
    assert [r["outcome_id"] for r in records(client)] == [first.outcome_id]
    assert 3590 <= client.ttl(claim_key(STREAM, first.outcome_id)) <= 3600
    # the key is the client's: another client's same key is another outcome
    other = log.record(outcome, idempotency_key="order-1", client="shop-b")
    assert not other.duplicate and other.outcome_id != first.outcome_id and len(records(client)) == 2


def test_the_body_field_is_the_header_and_they_must_agree(store):
    log, client = store
    body = OutcomeRequest(user_id=1, revenue=1.0, idempotency_key="k-1")
    first = log.record(body)
    assert log.record(body, idempotency_key="k-1").duplicate  # the same key, from the header this time
    assert log.record(OutcomeRequest(user_id=1, revenue=1.0), idempotency_key="k-1").outcome_id == first.outcome_id
    with pytest.raises(OutcomeRejected, match="the Idempotency-Key header and the body's idempotency_key differ"):
        log.record(body, idempotency_key="k-2")
    assert len(records(client)) == 1


def test_a_key_reused_for_another_outcome_is_refused(store):
    log, client = store
    log.record(OutcomeRequest(user_id=1, revenue=1.0), idempotency_key="k")
    with pytest.raises(OutcomeRejected, match="this idempotency key was used for a different outcome"):
        log.record(OutcomeRequest(user_id=1, revenue=2.0), idempotency_key="k")
    assert len(records(client)) == 1


def test_a_retry_after_the_claim_expired_is_still_counted_once_in_the_lake(store, tmp_path):
    log, client = store
    outcome = OutcomeRequest(user_id=3, revenue=5.0, ts=NOW - 60)
    first = log.record(outcome, idempotency_key="late")
    client.delete(claim_key(STREAM, first.outcome_id))  # what the TTL does
    assert not log.record(outcome, idempotency_key="late").duplicate
    assert len(records(client)) == 2
    StreamDrain(client, STREAM, "lake", "c1", tmp_path, OUTCOME_FORMAT).drain()
    lake = read_partitions(tmp_path, record_format=OUTCOME_FORMAT)
    assert list(lake["outcome_id"]) == [first.outcome_id] and list(lake["revenue"]) == [5.0]


def test_a_refused_append_leaves_no_claim_so_the_retry_is_stored(store):
    log, client = store
    client.set(STREAM, "not a stream")
    outcome = OutcomeRequest(user_id=1, revenue=1.0)
    with pytest.raises(redis.exceptions.ResponseError):
        log.record(outcome, idempotency_key="k")
    assert client.keys(claim_key(STREAM, "*")) == []
    client.delete(STREAM)
    assert not log.record(outcome, idempotency_key="k").duplicate and len(records(client)) == 1


def test_an_outcome_for_a_decision_never_answered_is_refused(store):
    log, client = store
    with pytest.raises(OutcomeRejected, match=r"decision_id [0-9a-f]{32} was not issued by this service"):
        log.record(OutcomeRequest(decision_id=uuid.uuid4().hex, revenue=1.0))
    assert records(client) == []


def test_the_http_answers_202_then_200_for_a_retry_and_422_for_a_decision_never_answered(serving_settings):
    with TestClient(create_app(serving_settings)) as api:
        decision = api.post("/v1/decisions", json={"user_id": 7, "surface": "home"}).json()
        body = {"decision_id": decision["decision_id"], "revenue": 9.0}
        key = {"Idempotency-Key": str(uuid.uuid4())}
        first = api.post("/v1/outcomes", json=body, headers=key)
        retry = api.post("/v1/outcomes", json=body, headers=key)
        assert first.status_code == 202 and first.json()["duplicate"] is False
        assert retry.status_code == 200 and retry.json() == {**first.json(), "duplicate": True}
        forged = api.post("/v1/outcomes", json={"decision_id": uuid.uuid4().hex, "revenue": 9.0})
        assert forged.status_code == 422 and "was not issued by this service" in forged.json()["detail"]
        bad_key = api.post("/v1/outcomes", json=body, headers={"Idempotency-Key": "has space"})
        assert bad_key.status_code == 422 and bad_key.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
        client = redis.Redis.from_url(serving_settings.redis_url)
        stored = [r for r in records(client, serving_settings.outcome_stream)
                  if r["decision_id"] == body["decision_id"]]
    assert [r["outcome_id"] for r in stored] == [first.json()["outcome_id"]]


def test_an_idempotency_claim_shares_its_stream_s_slot():
    """The claim-and-append script touches both keys: on a Redis Cluster they must hash to one slot."""
    for stream in (STREAM, "hyperlift:outcomes"):
        assert key_slot(claim_key(stream, "a1b2").encode()) == key_slot(stream.encode())
