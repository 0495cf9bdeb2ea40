"""POST /v1/admin/erasure: the user's online row, tiles and consent go, the answer is the receipt's summary, the audit
trail names the user by pseudonym; bad bodies are 422, a second erasure while one runs is 409."""

from __future__ import annotations

import json

import pytest
import redis
from fastapi.testclient import TestClient

from infra.audit import default_log
from infra.erasure.subject import Subject, entity_key
from serving.api.routes import admin
from serving.main import create_app
from tests.lake_ids import door


@pytest.fixture
def client(serving_settings):
    with TestClient(create_app(serving_settings)) as test_client:
        yield test_client


def test_an_erasure_answers_its_receipt_and_leaves_no_online_row(client, served_world, serving_settings):
    settings, redis_url, users = served_world
    user = int(users["user_id"].iloc[0])
    assert client.post("/v1/decisions", json={"user_id": user, "surface": "home"}).status_code == 200
    assert client.post("/v1/consent", json={"user_id": user, "granted": False}).status_code == 202
    pseudonym = door(settings)(user)  # what Redis holds for the user: the decision's row, the consent entry
    subject = Subject.of(user, serving_settings.hash_salt, pseudonymizers=(door(settings),))
    store = redis.Redis.from_url(redis_url)
    assert store.exists(entity_key(pseudonym)) and store.exists(f"hyperlift:consent:{{{pseudonym}}}")
    assert not store.exists(entity_key(user)) and not store.exists(f"hyperlift:consent:{{{user}}}")  # never raw

    answer = client.post("/v1/admin/erasure", json={"user_id": user, "reason": "ticket 7"})

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["user_key"] == subject.user_key and set(body["touched"]) >= {"lake", "redis", "decision_spill"}
    assert body["touched"]["redis"] >= 2 and body["touched"]["lake"] >= 1
    receipt = json.loads(open(body["receipt"]).read())
    assert receipt["user_key"] == subject.user_key and receipt["reason"] == "ticket 7"
    assert not any(store.exists(key) for key in subject.entity_keys)
    assert not store.exists(f"hyperlift:consent:{{{pseudonym}}}") and not store.exists(f"hyperlift:consent:{{{user}}}")
    entry = default_log().entries(action="erasure")[-1]
    assert entry["target"] == f"user_key:{subject.user_key}" and entry["details"]["receipt"] == body["receipt"]
    store.close()


@pytest.mark.parametrize("body", [
    {"user_id": "abc", "reason": "x"}, {"user_id": -1, "reason": "x"}, {"user_id": 1}, {"user_id": 1, "reason": ""},
    {"user_id": 1, "reason": "x", "extra": 1}, {"user_id": True, "reason": "x"},
])
def test_a_bad_body_is_refused_with_422(client, body):
    assert client.post("/v1/admin/erasure", json=body).status_code == 422


def test_a_second_erasure_while_one_runs_is_409(client):
    assert admin._erasing.acquire(blocking=False)
    try:
        answer = client.post("/v1/admin/erasure", json={"user_id": 1, "reason": "x"})
    finally:
        admin._erasing.release()
    assert answer.status_code == 409 and "another erasure" in answer.json()["detail"]
