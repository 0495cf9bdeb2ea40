"""What a hostile tester sent the running service, each answered with a documented 4xx and a message, never a 5xx;
strict types alike on decisions (the fast path and FastAPI's route), outcomes and events; the OpenAPI document
declaring the error bodies and statuses the service really answers."""

from __future__ import annotations

import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving.main import create_app
from tests.serving.conftest import SHOP

END = pd.Timestamp(SHOP.end)  # the service's clock (HYPERLIFT_SERVING_NOW, tests/serving/conftest.py)
JSON = {"content-type": "application/json"}
TOKEN = "s3cret"
TOO_LARGE = {"detail": "request body too large: at most 65536 bytes"}


@pytest.fixture
def both(serving_settings):
    """(the app uvicorn runs, FastAPI's app behind it), sharing one runtime; admin calls need TOKEN."""
    app = create_app(serving_settings.model_copy(update={"admin_token": TOKEN}))
    with TestClient(app) as fast:
        fastapi_app = app.app.app.app  # response counter → rate limit → fast path → FastAPI
        assert isinstance(fastapi_app, FastAPI)
        yield fast, TestClient(fastapi_app)


def page_view(event_id: str, user: int, **fields) -> dict:
    return {"event_id": event_id, "event_type": "page_view", "event_version": 1,
            "ts": (END - pd.Timedelta(hours=1)).isoformat(), "user_id": user, "session_id": f"s-{event_id}",
            "item_id": 3, "category_id": 4, "price": 12.5, "device": "mobile", "region": "south", **fields}


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"user_id": 1, "surface": "h\xffome"}', [{
            "type": "json_invalid", "loc": ["body"],
            "msg": "Invalid JSON: invalid unicode code point at line 1 column 29",
            "input": '{"user_id": 1, "surface": "h\ufffdome"}',
            "ctx": {"error": "invalid unicode code point at line 1 column 29"},
        }]),
        (b'{"user_id": true, "surface": "home"}', [{
            "type": "int_type", "loc": ["body", "user_id"], "msg": "Input should be a valid integer", "input": True,
        }]),
        (b'{"user_id": "7", "surface": "home"}', [{
            "type": "int_type", "loc": ["body", "user_id"], "msg": "Input should be a valid integer", "input": "7",
        }]),
        (b'{"user_id": 9007199254740993, "surface": "home"}', [{
            "type": "less_than_equal", "loc": ["body", "user_id"],
            "msg": "Input should be less than or equal to 9007199254740991", "input": 9007199254740993,
            "ctx": {"le": 9007199254740991},
        }]),
        (b'{"user_id": 1, "surface": "home", "context": {"f": NaN}}', None),
    ],
    ids=["not-utf8", "true", "text", "2^53+1", "nan-context"],
)
def test_bad_decision_bodies_are_a_422_alike_on_the_fast_path_and_fastapis_route(both, body, detail):
    fast, slow = both
    ours = fast.post("/v1/decisions", content=body, headers=JSON)
    theirs = slow.post("/v1/decisions", content=body, headers=JSON)
    assert ours.status_code == theirs.status_code == 422
    assert ours.json() == theirs.json()
    if detail is not None:
        assert ours.json() == {"detail": detail}
    else:  # NaN is echoed as its name: the 422 itself is strict JSON
        assert {"type": "finite_number", "loc": ["body", "context", "f", "float"],
                "msg": "Input should be a finite number", "input": "NaN"} in ours.json()["detail"]


def test_a_whole_number_sent_as_a_float_is_that_user(both):
    fast, slow = both
    for client in (fast, slow):
        assert client.post("/v1/decisions", json={"user_id": 7.0, "surface": "home"}).status_code == 200


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"user_id": 1, "revenue": NaN}', [{"type": "finite_number", "loc": ["body", "revenue"],
                                             "msg": "Input should be a finite number", "input": "NaN"}]),
        (b'{"user_id": 1, "revenue": Infinity}', [{"type": "finite_number", "loc": ["body", "revenue"],
                                                  "msg": "Input should be a finite number", "input": "Infinity"}]),
        (b'{"user_id": 1, "ts": NaN}', [{"type": "finite_number", "loc": ["body", "ts"],
                                        "msg": "Input should be a finite number", "input": "NaN"}]),
        (b'{"user_id": true}', [{"type": "int_type", "loc": ["body", "user_id"],
                                 "msg": "Input should be a valid integer", "input": True}]),
        (b'{"user_id": 1, "revenue": false}', [{"type": "float_type", "loc": ["body", "revenue"],
                                               "msg": "Input should be a valid number", "input": False}]),
        (b'{"user_id": 1, "revenue": 1000000.01}', [{
            "type": "less_than_equal", "loc": ["body", "revenue"],
            "msg": "Input should be less than or equal to 1000000", "input": 1000000.01, "ctx": {"le": 1000000.0},
        }]),
    ],
    ids=["revenue-nan", "revenue-inf", "ts-nan", "user-true", "revenue-false", "revenue-over"],
)
def test_bad_outcomes_are_a_422_naming_the_field_never_a_500(both, body, detail):
    fast, _ = both
    response = fast.post("/v1/outcomes", content=body, headers=JSON)
    assert response.status_code == 422
    assert response.json() == {"detail": detail}


def test_an_outcome_body_that_is_not_utf8_is_the_documented_400(both):
    fast, _ = both
    response = fast.post("/v1/outcomes", content=b'{"user_id": 1, "revenue": "\xff"}', headers=JSON)
    assert response.status_code == 400
    assert response.json() == {"detail": "There was an error parsing the body"}
    assert "400" in fast.get("/openapi.json").json()["paths"]["/v1/outcomes"]["post"]["responses"]


def test_an_event_without_the_optional_device_is_applied(both):
    fast, _ = both
    event = {k: v for k, v in page_view("nodev", 900_001).items() if k not in ("device", "region")}
    response = fast.post("/v1/events", json={"events": [event]})
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "rejected": [], "users_updated": 1, "rows_written": 1}


def test_money_past_the_contract_bound_is_refused_every_time_never_a_503(both):
    fast, _ = both
    for attempt in range(2):  # the second copy used to overflow the tile (503), its retry a silent "duplicate"
        response = fast.post("/v1/events", json={"events": [
            page_view("rich", 900_002, price=9.2e12),
            {**page_view("richer", 900_002, price=None), "event_type": "purchase", "revenue": 1e300},
        ]})
        assert response.status_code == 422, attempt
        assert response.json()["detail"]["rejected"] == [
            {"index": 0, "event_id": "rich", "rule": "price.range", "reason": "price must be <= 1000000.0"},
            {"index": 1, "event_id": "richer", "rule": "price.required", "reason": "price is missing"},
        ]
    ok = fast.post("/v1/events", json={"events": [page_view("fine", 900_002, price=1_000_000.0)]})
    assert ok.status_code == 202 and ok.json()["accepted"] == 1


@pytest.mark.parametrize(
    ("user_id", "rule", "reason"),
    [
        (True, "user_id.type", "user_id is not an integer: send a JSON number without a fraction (not text, not "
                               "true/false)"),
        ("5", "user_id.type", "user_id is not an integer: send a JSON number without a fraction (not text, not "
                              "true/false)"),
        (2**53 + 1, "user_id.range", "user_id must be <= 9007199254740991"),
        (10**400, "user_id.range", "user_id must be <= 9007199254740991"),
    ],
)
def test_event_user_ids_are_json_integers_within_the_contract(both, user_id, rule, reason):
    fast, _ = both
    response = fast.post("/v1/events", json={"events": [page_view("u", user_id)]})
    assert response.status_code == 422
    assert response.json()["detail"]["rejected"] == [{"index": 0, "event_id": "u", "rule": rule, "reason": reason}]


@pytest.mark.parametrize("path", ["/v1/events", "/v1/outcomes", "/v1/admin/clock", "/v1/decisions"])
def test_a_chunked_body_over_the_limit_is_a_413_not_a_400(both, path):
    fast, _ = both

    def chunks():
        yield b'{"events": ["'
        for _ in range(9):
            yield b"x" * 8192

    response = fast.post(path, content=chunks(), headers={**JSON, "authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 413
    assert response.json() == TOO_LARGE


@pytest.mark.parametrize(
    ("now", "echo"),
    [
        ("9999-12-31T23:00:00-05:00", "9999-12-31T23:00:00-05:00"),  # past pandas' last timestamp (2262)
        ("0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00+01:00"),  # before the first UTC instant Python holds
        ("2200-01-01T00:00:00Z", "2200-01-01T00:00:00+00:00"),
    ],
)
def test_clock_moves_the_service_cannot_hold_are_a_409_with_a_message(both, now, echo):
    fast, _ = both
    response = fast.post("/v1/admin/clock", json={"now": now}, headers={"authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 409
    assert response.json() == {"detail": f"now {echo} is outside what the clock holds: send an instant before "
                                         "2200-01-01T00:00:00+00:00 and not earlier than the clock's "
                                         f"({END.isoformat()})"}


def test_a_clock_move_that_is_not_iso_text_is_a_422(both):
    fast, _ = both
    response = fast.post("/v1/admin/clock", json={"now": 5}, headers={"authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == (
        "Value error, now must be an ISO-8601 string with an offset, e.g. 2026-11-01T06:00:00Z"
    )


def test_admin_calls_without_the_token_are_the_documented_401(both):
    fast, _ = both
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {TOKEN}"}):
        response = fast.post("/v1/admin/safe-mode", json={"enabled": False, "reason": "x"}, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {
            "detail": "authentication required: send Authorization: Bearer <API key>, a key with the 'admin' scope"
        }


def test_the_openapi_document_declares_the_real_error_bodies_and_statuses(both):
    fast, _ = both
    doc = fast.get("/openapi.json").json()
    responses = {
        f"{method.upper()} {path}": {status: next(iter(answer.get("content", {"-": None}))) for status, answer in
                                     operation["responses"].items()}
        for path, methods in doc["paths"].items() for method, operation in methods.items()
    }
    json_ = "application/json"
    auth = {"401": json_, "403": json_}
    assert responses == {
        "POST /v1/decisions": {"200": json_, "404": json_, "413": json_, "422": json_, **auth},
        "POST /v1/outcomes": {"200": json_, "202": json_, "400": json_, "413": json_, "422": json_, "503": json_,
                              **auth},
        "POST /v1/events": {"200": json_, "202": json_, "400": json_, "413": json_, "422": json_, "503": json_,
                            **auth},
        "POST /v1/admin/safe-mode": {"200": json_, "400": json_, "413": json_, "422": json_, "503": json_, **auth},
        "POST /v1/admin/clock": {"200": json_, "400": json_, "409": json_, "413": json_, "422": json_, **auth},
        "POST /v1/admin/erasure": {"200": json_, "400": json_, "409": json_, "413": json_, "422": json_, "503": json_,
                                   **auth},
        "GET /healthz": {"200": json_},
        "GET /readyz": {"200": json_, "503": json_},
        "GET /metrics": {"200": "text/plain", **auth},
        "GET /v1/stats": {"200": json_, **auth},
        "POST /v1/consent": {"200": json_, "202": json_, "400": json_, "413": json_, "422": json_, "503": json_,
                             **auth},
        "GET /v1/consent/{user_id}": {"200": json_, "422": json_, "503": json_, **auth},
    }

    def schema(path: str, status: str) -> dict:
        return doc["paths"][path]["post"]["responses"][status]["content"][json_]["schema"]

    assert schema("/v1/events", "422") == {"$ref": "#/components/schemas/EventsRefused"}
    assert schema("/v1/outcomes", "422") == {"$ref": "#/components/schemas/InvalidRequest"}
    assert schema("/v1/decisions", "413") == {"$ref": "#/components/schemas/ErrorMessage"}
    security = {f"{m.upper()} {path}": op.get("security") for path, ms in doc["paths"].items() for m, op in ms.items()}
    assert security == {
        "POST /v1/decisions": [{"api_key": ["decide"]}], "POST /v1/outcomes": [{"api_key": ["outcomes"]}],
        "POST /v1/events": [{"api_key": ["events"]}], "POST /v1/admin/safe-mode": [{"api_key": ["admin"]}],
        "POST /v1/admin/clock": [{"api_key": ["admin"]}], "POST /v1/admin/erasure": [{"api_key": ["admin"]}],
        "GET /metrics": [{"api_key": ["ops"]}],
        "GET /v1/stats": [{"api_key": ["ops"]}], "GET /healthz": None, "GET /readyz": None,
        "POST /v1/consent": [{"api_key": ["consent"]}], "GET /v1/consent/{user_id}": [{"api_key": ["consent"]}],
    }
    assert doc["components"]["securitySchemes"]["api_key"]["scheme"] == "bearer"
    request = doc["paths"]["/v1/decisions"]["post"]["requestBody"]["content"][json_]["schema"]
    user_id = request["properties"]["user_id"]
    assert (user_id["type"], user_id["minimum"], user_id["maximum"]) == ("integer", 0, 2**53 - 1)
    assert fast.get("/metrics").headers["content-type"].startswith("text/plain")
