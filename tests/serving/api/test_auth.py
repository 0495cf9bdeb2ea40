"""API keys at the edge: every route family needs a key with its scope (the decision fast path too, before it reads
the body), 401/403 in the service's error format, production mode refuses to start unsafe, dev mode is open."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from fastapi.testclient import TestClient

from serving.api.auth import STATE_KEY, client_id
from serving.api.fast_path import DecisionFastPath
from infra.keys import KeysError
from serving.core.config import ServingSettings
from serving.main import create_app
from serving.ops.api_keys import (
    ADMIN_TOKEN_ID, DEV_MODE_WARNING, HEADER_CACHE_SIZE, ApiKey, KeyRing, KeysFileError, UnsafeProduction,
    build_key_ring, create, hash_secret, load_keys, main, revoke,
)
from tests.serving.api.test_api import users_with

SALT = "a-secret-salt-of-32-characters!!"
ADMIN_TOKEN = "admin-s3cret-token"
KEYS = {"shop": ["decide", "outcomes"], "feeder": ["events"], "scraper": ["ops"], "crm": ["consent"],
        "root": ["decide", "events", "outcomes", "consent", "ops", "admin"]}
SAFE_MODE_OFF = {"enabled": False, "reason": "test"}


@pytest.fixture
def secrets_(tmp_path) -> dict[str, str]:
    """A keys file with KEYS (secrets by key id); its path under "file"."""
    path = tmp_path / "keys.yaml"
    secrets = {key_id: create(path, key_id, scopes) for key_id, scopes in KEYS.items()}
    return {**secrets, "file": str(path)}


@pytest.fixture
def production(serving_settings, secrets_) -> ServingSettings:
    """The served world in production mode: the keys file, a secret salt, an admin token."""
    return serving_settings.model_copy(update={
        "mode": "production", "api_keys_file": secrets_["file"], "hash_salt": SALT, "admin_token": ADMIN_TOKEN,
    })


@pytest.fixture
def api(production):
    with TestClient(create_app(production)) as client:
        yield client
        client.app.state.runtime.service.trace.flush()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def fast_path_of(app) -> DecisionFastPath:
    """The DecisionFastPath inside the app uvicorn runs (whatever middleware wraps it)."""
    while not isinstance(app, DecisionFastPath):
        app = app.app
    return app


CALLS = [  # (method, path, body, scope)
    ("POST", "/v1/decisions", {"user_id": 1, "surface": "home"}, "decide"),
    ("POST", "/v1/outcomes", {"user_id": 1, "revenue": 1.0}, "outcomes"),
    ("POST", "/v1/events", {"events": []}, "events"),
    ("POST", "/v1/consent", {"user_id": 1, "granted": False}, "consent"),
    ("GET", "/v1/consent/1", None, "consent"),
    ("POST", "/v1/admin/safe-mode", SAFE_MODE_OFF, "admin"),
    ("POST", "/v1/admin/clock", {"now": "2030-01-01T00:00:00Z"}, "admin"),
    # An id no user can have: the admin gets through the key check to a 422, and nothing is erased.
    ("POST", "/v1/admin/erasure", {"user_id": -1, "reason": "auth test"}, "admin"),
    ("GET", "/metrics", None, "ops"),
    ("GET", "/v1/stats", None, "ops"),
]


def call(client, method: str, path: str, body, headers=None):
    return client.request(method, path, json=body, headers=headers or {})


def test_settings_default_to_production_mode():
    assert ServingSettings(redis_url="redis://127.0.0.1:6379/0").mode == "production"


@pytest.mark.parametrize(("method", "path", "body", "scope"), CALLS, ids=[f"{m} {p}" for m, p, _, _ in CALLS])
def test_every_route_family_refuses_a_call_without_a_valid_key_with_401(api, method, path, body, scope, secrets_):
    for headers in ({}, bearer("hlk_not-a-key"), {"Authorization": f"Basic {secrets_['root']}"},
                    {"Authorization": "Bearer "}, {"X-API-Key": secrets_["root"]}):
        response = call(api, method, path, body, headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {
            "detail": f"authentication required: send Authorization: Bearer <API key>, a key with the {scope!r} scope"
        }


@pytest.mark.parametrize(("method", "path", "body", "scope"), CALLS, ids=[f"{m} {p}" for m, p, _, _ in CALLS])
def test_a_key_without_the_scope_gets_403_and_one_with_it_gets_through(api, method, path, body, scope, secrets_):
    lacking = next(k for k, scopes in KEYS.items() if scope not in scopes)
    refused = call(api, method, path, body, bearer(secrets_[lacking]))
    assert refused.status_code == 403
    assert refused.json() == {"detail": f"API key {lacking!r} does not have the {scope!r} scope this call needs; use a "
                                        "key that has it"}
    assert refused.headers["www-authenticate"] == f'Bearer error="insufficient_scope", scope="{scope}"'
    holders = [secrets_[k] for k, scopes in KEYS.items() if scope in scopes]
    holders += [ADMIN_TOKEN] if scope == "admin" else []
    for secret in holders:
        allowed = call(api, method, path, body, bearer(secret))
        assert allowed.status_code not in (401, 403), allowed.text


def test_the_issues_reproductions_are_refused(api, secrets_, served_world):
    user = users_with(served_world)[0]
    shop = bearer(secrets_["shop"])
    # anyone could flip safe mode: a decide key cannot, nor can no key
    assert api.post("/v1/admin/safe-mode", json={"enabled": True, "reason": "x"}, headers=shop).status_code == 403
    assert api.app.state.runtime.service.safe_mode.enabled is False
    # anyone could post events that rewrite any user's features: only an events key may
    event = {"event_id": "e1", "event_type": "page_view", "event_version": 1, "ts": "2026-01-01T00:00:00Z",
             "user_id": user, "session_id": "s", "item_id": 1, "category_id": 1, "price": 1.0, "device": "mobile",
             "region": "south"}
    assert api.post("/v1/events", json={"events": [event]}, headers=shop).status_code == 403
    assert api.post("/v1/events", json={"events": [event]}).status_code == 401
    # the admin token guarded only /v1/admin/*: it is an admin-only key now, nothing else
    admin = bearer(ADMIN_TOKEN)
    assert api.post("/v1/decisions", json={"user_id": user, "surface": "home"}, headers=admin).status_code == 403
    assert api.post("/v1/admin/safe-mode", json=SAFE_MODE_OFF, headers=admin).status_code == 200
    # open: liveness, readiness and the API's description
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs", "/redoc", "/static-offline-docs/swagger-ui.css"):
        assert api.get(path).status_code == 200, path


def test_the_fast_path_refuses_before_it_reads_the_body(api, secrets_):
    # a body over the 64 kB limit: without a key the answer is 401, not 413 (the body is never looked at)
    big = b'{"user_id": 1, "surface": "home", "context": {"a": "' + b"x" * 70_000 + b'"}}'
    headers = {"content-type": "application/json"}
    assert api.post("/v1/decisions", content=big, headers=headers).status_code == 401
    assert api.post("/v1/decisions", content=big, headers={**headers, **bearer(secrets_["feeder"])}).status_code == 403
    assert api.post("/v1/decisions", content=big, headers={**headers, **bearer(secrets_["shop"])}).status_code == 413

    # in raw ASGI: the request's body is never received
    fast = fast_path_of(api.app)
    sent: list[dict] = []

    async def receive() -> dict:
        raise AssertionError("the fast path read the body of a request without a key")

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/decisions", "headers": [(b"content-length", b"40")]}
    asyncio.run(fast(scope, receive, send))
    assert sent[0]["status"] == 401 and (b"www-authenticate", b"Bearer") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["detail"].startswith("authentication required")


def test_fastapis_decision_route_is_guarded_as_the_fast_path(api, secrets_):
    behind = TestClient(fast_path_of(api.app).app)  # FastAPI's app alone, same runtime
    body = {"user_id": 1, "surface": "home"}
    assert behind.post("/v1/decisions", json=body).status_code == 401
    assert behind.post("/v1/decisions", json=body, headers=bearer(secrets_["feeder"])).status_code == 403
    assert behind.post("/v1/decisions", json=body, headers=bearer(secrets_["shop"])).status_code == 200


def test_client_id_names_the_key_of_a_valid_credential_else_anonymous(secrets_):
    ring = KeyRing([(hash_secret(secrets_["shop"]), ApiKey("shop", frozenset({"decide"})))])

    def scope(*headers: tuple[bytes, bytes], state: bool = True) -> dict:
        return {"type": "http", "headers": list(headers), **({"state": {STATE_KEY: ring}} if state else {})}

    valid = (b"authorization", f"Bearer {secrets_['shop']}".encode())
    assert client_id(scope(valid)) == "shop"
    assert client_id(scope((b"authorization", f"bearer  {secrets_['shop']} ".encode()))) == "shop"
    assert client_id(scope((b"authorization", b"Bearer nope"))) == "anonymous"
    assert client_id(scope()) == "anonymous"
    assert client_id(scope(valid, state=False)) == "anonymous"  # before start-up: no key ring yet


def test_client_id_reads_the_key_ring_from_the_lifespan_state_of_the_running_app(api, secrets_):
    seen: list[str] = []
    fast = fast_path_of(api.app)
    original = fast.app

    async def spy(scope, receive, send):
        seen.append(client_id(scope))
        await original(scope, receive, send)

    fast.app = spy
    try:
        api.get("/healthz", headers=bearer(secrets_["scraper"]))
        api.get("/healthz")
    finally:
        fast.app = original
    assert seen == ["scraper", "anonymous"]


def test_the_key_ring_remembers_only_valid_header_values_and_stays_bounded():
    ring = KeyRing([(hash_secret("s1"), ApiKey("one", frozenset({"decide"})))])
    assert ring.identify(b"Bearer s1") == ApiKey("one", frozenset({"decide"}))
    for i in range(HEADER_CACHE_SIZE * 2):
        assert ring.identify(f"Bearer wrong{i}".encode()) is None
    assert len(ring._by_header) == 1  # invalid values are never remembered: they cannot evict the valid ones
    for i in range(HEADER_CACHE_SIZE + 10):
        ring.identify(b"Bearer s1" + b" " * i)  # the same key, written differently
    assert len(ring._by_header) <= HEADER_CACHE_SIZE
    assert ring.identify(None) is None and ring.identify(b"Bearer") is None and ring.identify(b"s1") is None


def test_production_refuses_to_start_with_the_default_salt_or_without_keys(serving_settings, secrets_, tmp_path):
    # no salt configured nor in a key file: the public default (a dev-mode start made one in the served world's home)
    unsafe = serving_settings.model_copy(
        update={"mode": "production", "hash_salt": ServingSettings.model_fields["hash_salt"].default})
    with pytest.raises(UnsafeProduction) as refused:
        build_key_ring(unsafe)
    message = str(refused.value)
    assert "HYPERLIFT_SERVING_HASH_SALT is the public default" in message
    assert "no API keys (HYPERLIFT_SERVING_API_KEYS_FILE: unset)" in message
    assert "HYPERLIFT_SERVING_MODE=dev" in message
    with pytest.raises(UnsafeProduction, match="shorter than 16 characters"):
        build_key_ring(unsafe.model_copy(update={"hash_salt": "short", "api_keys_file": secrets_["file"]}))
    (tmp_path / "empty.yaml").write_text("keys: []\n")
    only_admin = unsafe.model_copy(update={"hash_salt": SALT, "api_keys_file": tmp_path / "empty.yaml",
                                           "admin_token": ADMIN_TOKEN})
    with pytest.raises(UnsafeProduction, match=r"no API keys \(HYPERLIFT_SERVING_API_KEYS_FILE: .*empty.yaml\)"):
        build_key_ring(only_admin)
    # the app does not start: the lifespan raises before anything is loaded
    with pytest.raises(UnsafeProduction):
        with TestClient(create_app(unsafe)):
            pass


def test_production_refuses_to_start_without_the_pseudonym_key_and_makes_none(serving_settings, secrets_, tmp_path,
                                                                              monkeypatch):
    monkeypatch.setenv("HYPERLIFT_KEYS_FILE", str(tmp_path / "keys" / "keys.json"))  # a key file with no key yet
    monkeypatch.delenv("HYPERLIFT_PSEUDONYM_KEY", raising=False)
    production = serving_settings.model_copy(
        update={"mode": "production", "hash_salt": SALT, "api_keys_file": secrets_["file"]})
    build_key_ring(production)  # the keys and the salt are fine: the pseudonym key is what is missing
    with pytest.raises(KeysError, match=r"no pseudonym key in .*keys.json: the lake is keyed by it. Point "
                                        r"HYPERLIFT_KEYS_FILE at the key file the pipeline uses"):
        with TestClient(create_app(production)):
            pass
    assert not (tmp_path / "keys" / "keys.json").exists()  # production never makes a key


def test_dev_mode_is_open_except_admin_with_a_token_and_says_so_once(serving_settings, served_world):
    warnings = Messages()
    logger = logging.getLogger("serving.ops.api_keys")  # its own handler: serving.ops.json_logs resets the parent's
    logger.addHandler(warnings)
    try:
        assert build_key_ring(serving_settings).open_scopes == {
            "decide", "events", "outcomes", "consent", "ops", "admin"}
        assert build_key_ring(serving_settings.model_copy(update={"admin_token": "t"})).open_scopes == {
            "decide", "events", "outcomes", "consent", "ops"}
        with TestClient(create_app(serving_settings)) as client:
            for method, path, body, _ in CALLS:
                assert call(client, method, path, body).status_code not in (401, 403), path
    finally:
        logger.removeHandler(warnings)
    assert warnings.messages == [DEV_MODE_WARNING] * 3  # each key ring built in dev mode, the app's once
    assert "authentication is OFF" in DEV_MODE_WARNING


class Messages(logging.Handler):
    """The messages of the records it handles."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_the_cli_prints_the_secret_once_and_stores_only_its_hash(tmp_path, capsys):
    path = tmp_path / "conf" / "keys.yaml"
    assert main(["create", "--file", str(path), "--id", "shop-a", "--scopes", "decide,events"]) == 0
    out, err = capsys.readouterr()
    secret = out.strip()
    assert secret.startswith("hlk_") and len(secret) == 47 and "shown once" in err
    text = path.read_text()
    assert secret not in text and hash_secret(secret) in text
    assert path.stat().st_mode & 0o777 == 0o600
    (key,) = load_keys(path).keys
    assert (key.id, key.scopes) == ("shop-a", ["decide", "events"])
    assert main(["list", "--file", str(path)]) == 0 and capsys.readouterr().out == "shop-a\tdecide,events\n"
    assert main(["create", "--file", str(path), "--id", "shop-a", "--scopes", "decide"]) == 2
    assert "key id 'shop-a' exists" in capsys.readouterr().err
    assert main(["create", "--file", str(path), "--id", "x", "--scopes", "decide,root"]) == 2
    assert "scopes.1: Input should be 'decide', 'events', 'outcomes', 'consent', 'ops' or 'admin'" in capsys.readouterr().err
    revoke(path, "shop-a")
    assert load_keys(path).keys == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("keys: [{id: a, sha256: " + "a" * 64 + ", scopes: [decide]}, {id: a, sha256: " + "b" * 64
         + ", scopes: [events]}]", "duplicate key ids ['a']"),
        ("keys: [{id: a, sha256: nothex, scopes: [decide]}]", "keys.0.sha256: String should match pattern"),
        ("keys: [{id: a, sha256: " + "a" * 64 + ", scopes: []}]", "keys.0.scopes: List should have at least 1 item"),
        ("keys: [{id: a, sha256: " + "a" * 64 + ", scopes: [decide], secret: x}]", "keys.0.secret: Extra inputs"),
        ('{"keys": [{"id": "a b", "sha256": "' + "a" * 64 + '", "scopes": ["decide"]}]}', "keys.0.id: String should"),
        ("keys: [", "not valid YAML or JSON"),
        ("keys: [{id: a, sha256: " + "0" * 64 + ", scopes: [decide]}]", 'the hash must be text: quote it ("...")'),
    ],
)
def test_a_bad_keys_file_is_refused_naming_the_file_and_the_field(tmp_path, text, problem):
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(KeysFileError, match="keys.yaml: ") as refused:
        load_keys(path)
    assert problem in str(refused.value)
    with pytest.raises(KeysFileError, match="cannot read the keys file"):
        load_keys(tmp_path / "missing.yaml")


def test_the_admin_token_is_an_admin_only_key(serving_settings, secrets_):
    ring = build_key_ring(serving_settings.model_copy(update={
        "mode": "production", "hash_salt": SALT, "api_keys_file": secrets_["file"], "admin_token": ADMIN_TOKEN,
    }))
    assert ring.identify(f"Bearer {ADMIN_TOKEN}".encode()) == ApiKey(ADMIN_TOKEN_ID, frozenset({"admin"}))
    assert len(ring) == len(KEYS) + 1
    with pytest.raises(KeysFileError, match="HYPERLIFT_SERVING_ADMIN_TOKEN is also a key of this file"):
        build_key_ring(serving_settings.model_copy(update={"api_keys_file": secrets_["file"],
                                                           "admin_token": secrets_["shop"]}))
