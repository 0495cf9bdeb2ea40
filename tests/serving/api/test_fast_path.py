"""DecisionFastPath (serving/api/fast_path.py) answers POST /v1/decisions as FastAPI's route does, and hands every other
request to FastAPI."""

import pytest
from fastapi.testclient import TestClient

from serving.api.fast_path import DecisionFastPath
from serving.main import create_app
from tests.serving.api.test_api import users_with


@pytest.fixture
def both(serving_settings):
    """(the app uvicorn runs, FastAPI's app behind it), sharing one runtime."""
    app = create_app(serving_settings)
    fast_path = app.app.app  # behind the response counter and the rate limit (serving/api/rate_limit.py)
    assert isinstance(fast_path, DecisionFastPath)
    with TestClient(app) as fast:
        yield fast, TestClient(fast_path.app)
        fast.app.state.runtime.service.trace.flush()


BODIES = [
    b'{"surface": "home"}',
    b'{"user_id": -1, "surface": "home"}',
    b'{"user_id": 1, "surface": "home", "colour": "red"}',
    b'{"user_id": 1, "surface": "basket"}',
    b'{"user_id": 1, "surface": "home", "candidates": ["free_beer"]}',
    b'{"user_id": 1, "surface": ',
    b"",
]


@pytest.mark.parametrize("body", BODIES, ids=["no-user", "negative", "extra", "surface", "candidate", "cut", "empty"])
def test_bad_requests_get_the_same_answer_from_both_paths(both, body):
    fast, slow = both
    ours = fast.post("/v1/decisions", content=body, headers={"content-type": "application/json"})
    theirs = slow.post("/v1/decisions", content=body, headers={"content-type": "application/json"})
    assert ours.status_code == theirs.status_code and ours.status_code in (404, 422)
    assert ours.json() == theirs.json()


def test_validation_errors_are_located_in_the_body_as_fastapi_reports_them(both):
    fast, _ = both
    detail = fast.post("/v1/decisions", json={"user_id": "abc", "surface": "home"}).json()["detail"]
    assert [error["loc"] for error in detail] == [["body", "user_id"]]
    assert detail[0]["type"] == "int_type" and "url" not in detail[0]  # strict: text is not a user id


def test_a_decision_answers_alike_on_both_paths(both, served_world):
    fast, slow = both
    user = users_with(served_world)[0]
    ours = fast.post("/v1/decisions", json={"user_id": user, "surface": "home"})
    theirs = slow.post("/v1/decisions", json={"user_id": user, "surface": "home"})
    assert ours.status_code == theirs.status_code == 200
    assert ours.headers["content-type"] == theirs.headers["content-type"] == "application/json"
    same = ("surface", "model", "feature_service", "policy_version", "experiments", "fallback")
    assert {k: ours.json()[k] for k in same} == {k: theirs.json()[k] for k in same}
    assert ours.json()["decision_id"] != theirs.json()["decision_id"]


def test_bodies_over_the_limit_are_413_declared_or_streamed(both):
    fast, _ = both
    big = b'{"user_id": 1, "surface": "home", "context": {"a": "' + b"x" * 70_000 + b'"}}'
    declared = fast.post("/v1/decisions", content=big, headers={"content-type": "application/json"})

    def chunks():
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]

    streamed = fast.post("/v1/decisions", content=chunks(), headers={"content-type": "application/json"})
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json() == {"detail": "request body too large: at most 65536 bytes"}


def test_a_bug_while_deciding_is_a_500_with_a_message_not_a_dropped_connection(both, served_world, monkeypatch):
    fast, _ = both

    async def broken(request):
        raise RuntimeError("boom")

    monkeypatch.setattr(fast.app.state.runtime.service, "decide_async", broken)
    response = fast.post("/v1/decisions", json={"user_id": users_with(served_world)[0], "surface": "home"})
    assert response.status_code == 500
    assert "internal error while deciding" in response.json()["detail"]
    assert fast.app.state.runtime.service.metrics.total("hyperlift_decision_request_errors_total") == 1


def test_other_routes_and_methods_go_to_fastapi(both):
    fast, _ = both
    assert fast.get("/healthz").status_code == 200
    assert fast.get("/v1/decisions").status_code == 405
    documented = fast.get("/openapi.json").json()["paths"]["/v1/decisions"]["post"]
    schema = documented["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) == {"user_id", "surface"}
    assert "neutral action" in documented["description"]


def test_what_start_up_loaded_is_kept_out_of_the_garbage_collector_while_serving(serving_settings):
    import gc

    with TestClient(create_app(serving_settings)) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_freeze_count() > 100_000  # Feast, MLflow and the models
    assert gc.get_freeze_count() == 0
