"""The HTTP contract of the decision service, against real Redis, Feast and MLflow."""

import json

import pytest
import redis
from fastapi.testclient import TestClient

from serving.main import create_app


@pytest.fixture
def client(serving_settings):
    with TestClient(create_app(serving_settings)) as test_client:
        yield test_client
        test_client.app.state.runtime.service.trace.flush()


def users_with(served_world, consent=True, regions=("south", "west")) -> list[int]:
    users = served_world[2]
    chosen = users.loc[(users["consent_marketing"] == consent) & users["region"].isin(regions), "user_id"]
    return [int(u) for u in chosen]


def last_trace(settings) -> dict:
    stream = redis.Redis.from_url(settings.redis_url)
    (_, fields), = stream.xrevrange(settings.decision_stream, count=1)
    return json.loads(fields[b"record"])


def test_decision_shape_and_exact_epsilon_greedy_propensities(client, served_world):
    body = client.post("/v1/decisions", json={"user_id": users_with(served_world)[0], "surface": "home"}).json()
    assert set(body) == {
        "decision_id", "surface", "actions", "slate_propensity", "model", "feature_service", "policy_version",
        "experiments", "fallback", "redrawn",
    }
    assert body["model"] == {"name": "hyperlift_uplift", "version": "1"} and body["redrawn"] is False
    assert body["feature_service"] == "uplift_v1" and body["fallback"] is None and body["surface"] == "home"
    assert body["policy_version"].startswith("home@")
    (action,) = body["actions"]
    # epsilon 0.2 over the model's 3 actions: 0.2/3 for explored ones, 0.8 + 0.2/3 for the greedy one
    assert action["propensity"] in (pytest.approx(0.2 / 3), pytest.approx(0.8 + 0.2 / 3))
    assert body["slate_propensity"] == pytest.approx(action["propensity"])


def test_trace_record_is_compact_has_no_raw_ids_and_matches_the_response(client, served_world, serving_settings):
    user = users_with(served_world)[1]
    body = client.post(
        "/v1/decisions", json={"user_id": user, "surface": "home", "context": {"page": "landing", "device": "ios"}}
    ).json()
    client.app.state.runtime.service.trace.flush()
    record = last_trace(serving_settings)
    assert record["decision_id"] == body["decision_id"]
    assert record["chosen"] == [a["action_id"] for a in body["actions"]]
    assert record["chosen_probabilities"] == [a["propensity"] for a in body["actions"]]
    assert record["candidates"] == ["no_action", "pct10_sitewide", "push_reminder"]
    assert abs(sum(record["probabilities"]) - 1.0) < 1e-9
    chosen_index = record["candidates"].index(record["chosen"][0])
    assert record["probabilities"][chosen_index] == pytest.approx(record["chosen_probabilities"][0])
    assert (record["model_name"], record["model_version"], record["feature_service"]) == ("hyperlift_uplift", "1", "uplift_v1")
    assert record["policy_version"] == body["policy_version"] and record["region"] in ("south", "west")
    assert set(record["latency_ms"]) >= {"features", "scoring", "policy"}
    assert "user_id" not in record and "context" not in record  # hashed, not raw
    # no top-level field carries the raw id (record_version and redraws are small counts that may equal it)
    values = [v for k, v in record.items() if k not in ("record_version", "redraws")]
    assert user not in values and str(user) not in values and "landing" not in json.dumps(record)
    assert len(record["user_key"]) == 32 and len(record["context_hash"]) == 32


def test_user_without_consent_only_gets_the_neutral_action(client, served_world):
    user = users_with(served_world, consent=False)[0]
    for _ in range(10):
        body = client.post("/v1/decisions", json={"user_id": user, "surface": "home"}).json()
        assert body["actions"] == [{"action_id": "no_action", "score": 0.0, "propensity": 1.0}]
        assert body["fallback"] is None


def test_region_bundle_blocks_actions_chosen_from_the_users_region_or_the_context(client, served_world):
    strict_user = users_with(served_world, regions=("north", "east"))[0]
    standard_user = users_with(served_world)[0]
    surface = {"surface": "home", "candidates": ["no_action", "push_reminder"]}
    for _ in range(15):
        body = client.post("/v1/decisions", json={"user_id": strict_user, **surface}).json()
        assert body["actions"][0]["action_id"] == "no_action" and body["actions"][0]["propensity"] == 1.0
        # the request context names the region: the strict bundle applies to a standard-region user too
        ctx = client.post("/v1/decisions", json={"user_id": standard_user, "context": {"region": "north"}, **surface})
        assert ctx.json()["actions"][0]["action_id"] == "no_action"
    chosen = {
        client.post("/v1/decisions", json={"user_id": standard_user, **surface}).json()["actions"][0]["action_id"]
        for _ in range(40)
    }
    assert chosen == {"no_action", "push_reminder"}  # epsilon 0.2 explores both where push is allowed


def test_a_lenient_region_in_the_request_does_not_relax_a_strict_users_rules(client, served_world, serving_settings):
    # the reproduction: a blocked action served to 20 of 20 strict-region users naming region "south"
    strict_users = users_with(served_world, regions=("north", "east"))[:20]
    assert len(strict_users) == 20
    surface = {"surface": "home", "candidates": ["no_action", "push_reminder"]}
    served = [
        client.post("/v1/decisions", json={"user_id": user, "context": {"region": "south"}, **surface}).json()
        for user in strict_users
    ]
    assert [body["actions"][0]["action_id"] for body in served] == ["no_action"] * 20
    assert all(body["actions"][0]["propensity"] == 1.0 and body["fallback"] is None for body in served)
    client.app.state.runtime.service.trace.flush()
    assert last_trace(serving_settings)["region"] in ("north", "east")  # the trace keeps the user's own region


def test_consent_comes_from_the_profile_never_from_the_request(client, served_world):
    user = users_with(served_world, consent=False)[1]
    context = {"consent_marketing": 1, "consent": True, "region": "west"}
    for _ in range(10):
        body = client.post("/v1/decisions", json={"user_id": user, "surface": "home", "context": context}).json()
        assert body["actions"] == [{"action_id": "no_action", "score": 0.0, "propensity": 1.0}]


def test_candidates_restrict_the_choice(client, served_world):
    user = users_with(served_world)[0]
    chosen = {
        client.post("/v1/decisions", json={"user_id": user, "surface": "home", "candidates": ["push_reminder", "no_action"]})
        .json()["actions"][0]["action_id"]
        for _ in range(30)
    }
    assert chosen <= {"push_reminder", "no_action"}


def test_slate_is_diversified_and_carries_conditional_probabilities(client, served_world):
    user = users_with(served_world)[2]
    for _ in range(20):
        body = client.post("/v1/decisions", json={"user_id": user, "surface": "cart"}).json()
        chosen = [a["action_id"] for a in body["actions"]]
        assert len(chosen) == len(set(chosen)) and 1 <= len(chosen) <= 2
        assert chosen[-1] == "no_action" or len(chosen) == 2  # a slate stops at the neutral action
        assert body["slate_propensity"] == pytest.approx(
            body["actions"][0]["propensity"] * (body["actions"][1]["propensity"] if len(chosen) == 2 else 1.0)
        )
        assert all(0.05 <= a["propensity"] <= 1.0 for a in body["actions"])  # softmax floor 0.05


def test_unknown_user_gets_the_documented_cold_start(client):
    body = client.post("/v1/decisions", json={"user_id": 987654321, "surface": "home"}).json()
    assert body["fallback"] == "cold_start_unknown_user"
    assert body["actions"] == [{"action_id": "no_action", "score": 0.0, "propensity": 1.0}]
    assert client.get("/v1/stats").json()["fallbacks"] == {"cold_start_unknown_user": 1}


def test_unknown_surface_is_a_404_naming_the_configured_ones(client):
    response = client.post("/v1/decisions", json={"user_id": 1, "surface": "basket"})
    assert response.status_code == 404
    assert response.json()["detail"] == "unknown surface 'basket'; configured surfaces: ['cart', 'home', 'push']"


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"surface": "home"}, "user_id"),
        ({"user_id": "abc", "surface": "home"}, "user_id"),
        ({"user_id": -1, "surface": "home"}, "greater than or equal to 0"),
        ({"user_id": 2**70, "surface": "home"}, "less than"),
        ({"user_id": 1, "surface": ""}, "surface"),
        ({"user_id": 1, "surface": "home", "candidates": []}, "candidates"),
        ({"user_id": 1, "surface": "home", "candidates": ["a"] * 101}, "at most 100"),
        ({"user_id": 1, "surface": "home", "colour": "red"}, "Extra inputs are not permitted"),
        ({"user_id": 1, "surface": "home", "context": {f"k{i}": i for i in range(33)}}, "at most 32 are allowed"),
        ({"user_id": 1, "surface": "home", "context": {"page": "x" * 300}}, "strings at most 256"),
        ({"user_id": 1, "surface": "home", "context": {"nested": {"a": 1}}}, "Input should be a valid string"),
    ],
)
def test_malformed_requests_get_422_with_a_message(client, payload, needle):
    response = client.post("/v1/decisions", json=payload)
    assert response.status_code == 422
    assert needle in response.text


def test_oversized_body_is_a_413(client):
    response = client.post(
        "/v1/decisions", content=b'{"user_id": 1, "surface": "home", "context": {"a": "' + b"x" * 70_000 + b'"}}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert "at most 65536 bytes" in response.json()["detail"]


def test_unknown_candidate_actions_are_named_in_a_422(client):
    response = client.post("/v1/decisions", json={"user_id": 1, "surface": "home", "candidates": ["free_beer"]})
    assert response.status_code == 422
    assert "unknown candidate actions ['free_beer']" in response.json()["detail"]


def test_candidates_outside_the_surface_are_a_422(client):
    response = client.post("/v1/decisions", json={"user_id": 1, "surface": "push", "candidates": ["pct10_sitewide"]})
    assert response.status_code == 422
    assert response.json()["detail"] == "candidates ['pct10_sitewide'] are not offered on surface 'push'"


def test_healthz_readyz_and_prometheus_metrics(client, served_world):
    client.post("/v1/decisions", json={"user_id": users_with(served_world)[0], "surface": "home"})
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["surfaces"] == ["cart", "home", "push"]
    assert health["models"] == {"hyperlift_uplift@champion": {"version": "1", "feature_service": "uplift_v1"}}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"ready": True, "problems": []}
    text = client.get("/metrics").text
    assert 'hyperlift_decisions_total{surface="home"} 1.0' in text
    assert 'hyperlift_decision_segment_seconds_bucket{le="0.04",segment="total",surface="home"} 1.0' in text
    assert "hyperlift_safe_mode 0.0" in text


def test_metrics_carry_the_process_the_model_and_every_response_by_route_and_status(client):
    assert client.post("/v1/decisions", json={"user_id": 5, "surface": "home"}).status_code == 200
    assert client.post("/v1/decisions", json={"user_id": "five", "surface": "home"}).status_code == 422
    assert client.get("/no/such/page").status_code == 404
    assert client.get("/healthz").status_code == 200
    text = client.get("/metrics").text
    assert 'hyperlift_http_responses_total{route="decisions",status="200"} 1.0' in text
    assert 'hyperlift_http_responses_total{route="decisions",status="422"} 1.0' in text
    assert 'hyperlift_http_responses_total{route="other",status="404"} 1.0' in text  # no raw path as a label
    assert 'hyperlift_http_responses_total{route="healthz",status="200"} 1.0' in text
    assert 'hyperlift_model_info{alias="champion",feature_service="uplift_v1",model="hyperlift_uplift",version="1"} 1.0' in text
    for series in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                   "python_info{", "python_gc_collections_total"):
        assert series in text, series
    assert "_created" not in text  # no timestamp twin of every counter
