"""The HTTP contract of the decision service, against real Redis, Feast and MLflow."""

import json

import pytest
import redis
from fastapi.testclient import TestClient

from serving.main import create_app
from tests.serving.conftest import FEATURES


@pytest.fixture
def client(serving_settings):
    with TestClient(create_app(serving_settings)) as test_client:
        yield test_client


def consented_user(served_world, consent=True) -> int:
    users = served_world[2]
    return int(users.loc[users["consent_marketing"] == consent, "user_id"].iloc[0])


def test_decision_shape_and_exact_propensities(client, served_world):
    body = client.post("/v1/decisions", json={"user_id": consented_user(served_world), "surface": "home"}).json()
    assert set(body) == {"decision_id", "actions", "model", "feature_service", "fallback"}
    assert body["model"] == {"name": "hyperlift_uplift", "version": "1"}
    assert body["feature_service"] == "uplift_v1" and body["fallback"] is None
    (action,) = body["actions"]
    # epsilon 0.2 over the model's 3 actions: 0.2/3 for explored ones, 0.8 + 0.2/3 for the greedy one
    assert action["propensity"] in (pytest.approx(0.2 / 3), pytest.approx(0.8 + 0.2 / 3))


def test_user_without_consent_only_gets_the_control(client, served_world):
    user = consented_user(served_world, consent=False)
    for _ in range(20):
        body = client.post("/v1/decisions", json={"user_id": user, "surface": "home"}).json()
        assert body["actions"] == [{"action_id": "no_action", "score": 0.0, "propensity": 1.0}]
        assert body["fallback"] is None


def test_candidates_restrict_the_choice(client, served_world):
    user = consented_user(served_world)
    chosen = {
        client.post("/v1/decisions", json={"user_id": user, "surface": "home", "candidates": ["push_reminder", "no_action"]})
        .json()["actions"][0]["action_id"]
        for _ in range(30)
    }
    assert chosen <= {"push_reminder", "no_action"}


def test_unknown_user_gets_the_documented_cold_start(client):
    body = client.post("/v1/decisions", json={"user_id": 987654321, "surface": "home"}).json()
    assert body["fallback"] == "cold_start_unknown_user"
    assert body["actions"] == [{"action_id": "no_action", "score": 0.0, "propensity": 1.0}]
    assert client.get("/metrics").json()["fallbacks"] == {"cold_start_unknown_user": 1}


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"surface": "home"}, "user_id"),
        ({"user_id": "abc", "surface": "home"}, "user_id"),
        ({"user_id": -1, "surface": "home"}, "greater than or equal to 0"),
        ({"user_id": 1, "surface": ""}, "surface"),
        ({"user_id": 1, "surface": "home", "candidates": []}, "candidates"),
        ({"user_id": 1, "surface": "home", "colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_malformed_requests_get_422_with_a_message(client, payload, needle):
    response = client.post("/v1/decisions", json=payload)
    assert response.status_code == 422
    assert needle in response.text


def test_unknown_candidate_actions_are_named_in_a_422(client):
    response = client.post("/v1/decisions", json={"user_id": 1, "surface": "home", "candidates": ["free_beer"]})
    assert response.status_code == 422
    assert "unknown candidate actions ['free_beer']" in response.json()["detail"]


def test_every_decision_is_logged_with_its_probability(client, served_world, serving_settings):
    stream = redis.Redis.from_url(serving_settings.redis_url)
    before = stream.xlen(serving_settings.decision_stream)
    body = client.post("/v1/decisions", json={"user_id": consented_user(served_world), "surface": "cart"}).json()
    assert stream.xlen(serving_settings.decision_stream) == before + 1
    (_, fields), = stream.xrevrange(serving_settings.decision_stream, count=1)
    record = json.loads(fields[b"record"])
    assert record["decision_id"] == body["decision_id"]
    assert record["propensity"] == body["actions"][0]["propensity"]
    assert record["probabilities"][record["action_id"]] == record["propensity"]
    assert abs(sum(record["probabilities"].values()) - 1.0) < 1e-9
    assert record["surface"] == "cart" and record["model"] == {"name": "hyperlift_uplift", "version": "1"}
    assert len(record["features"]) == len(FEATURES) == 22


def test_healthz(client):
    assert client.get("/healthz").json() == {
        "status": "ok", "model": {"name": "hyperlift_uplift", "version": "1"}, "feature_service": "uplift_v1"
    }
