"""Per-client rate limits (serving/api/rate_limit.py): the token buckets, the 429 answer, client keys, the routes
that are never limited, the refusal metric, and the limit in front of the whole app (the decision fast path too)."""

import asyncio
import json

import pytest
from fastapi.testclient import TestClient

from serving.api.auth import STATE_KEY
from serving.api.rate_limit import RateLimit, TokenBuckets, client_key, route_family
from serving.main import create_app
from serving.ops.api_keys import ApiKey, KeyRing, hash_secret
from serving.ops.metrics import ServiceMetrics


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_gives_its_burst_then_one_token_per_interval():
    clock = Clock()
    buckets = TokenBuckets(rate_per_s=2.0, burst=3, max_keys=10, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)  # a token in half a second
    clock.now = 0.25
    assert buckets.take("a") == pytest.approx(0.25)  # refused requests take nothing
    clock.now = 0.5
    assert buckets.take("a") == 0.0 and buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0.0  # every key has its own bucket


def test_an_idle_bucket_refills_up_to_its_burst_only():
    clock = Clock()
    buckets = TokenBuckets(rate_per_s=1.0, burst=2, max_keys=10, clock=clock)
    buckets.take("a")
    clock.now = 1000.0
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]


def test_the_least_recently_seen_key_is_forgotten_beyond_max_keys():
    clock = Clock()
    buckets = TokenBuckets(rate_per_s=0.001, burst=1, max_keys=2, clock=clock)
    buckets.take("a")
    buckets.take("b")
    assert buckets.take("a") > 0  # a is now the most recently seen
    buckets.take("c")  # b goes
    assert len(buckets) == 2
    assert buckets.take("a") > 0 and buckets.take("c") > 0
    assert buckets.take("b") == 0.0  # forgotten: a full bucket again


def test_a_flood_of_new_keys_does_not_grow_memory():
    buckets = TokenBuckets(rate_per_s=1.0, burst=1, max_keys=100)
    for i in range(10_000):
        buckets.take(f"addr:10.0.{i // 256}.{i % 256}")
    assert len(buckets) == 100


def test_bad_bucket_settings_are_refused():
    with pytest.raises(ValueError, match="rate_per_s must be > 0"):
        TokenBuckets(rate_per_s=0, burst=1, max_keys=1)


def test_client_keys_are_the_api_key_id_else_the_address():
    secret = b"s3cret-api-key"
    ring = KeyRing([(hash_secret(secret), ApiKey("shop-a", frozenset({"decide"})))])
    state = {STATE_KEY: ring}
    with_key = {"headers": [(b"host", b"x"), (b"authorization", b"Bearer " + secret)], "client": ("10.0.0.1", 5000),
                "state": state}
    assert client_key(with_key) == "key:shop-a"
    assert client_key({**with_key, "client": ("10.0.0.2", 6000)}) == "key:shop-a"  # the key, wherever it calls from
    # A made-up token is no key: it shares its address's bucket instead of buying a fresh one per token.
    forged = {**with_key, "headers": [(b"authorization", b"Bearer made-up")]}
    assert client_key(forged) == "addr:10.0.0.1"
    assert client_key({"headers": [], "client": ("10.0.0.1", 5000), "state": state}) == "addr:10.0.0.1"
    assert client_key({"headers": [], "client": None}) == "addr:unknown"  # no key ring yet (before start-up)


@pytest.mark.parametrize("path, family", [
    ("/v1/decisions", "decisions"), ("/v1/outcomes", "outcomes"), ("/v1/admin/safe-mode", "admin"),
    ("/v1/users/123", "other"), ("/docs", "other"), ("/", "other"),
])
def test_route_families_are_a_closed_set(path, family):
    assert route_family(path) == family


async def ok(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


KEYS = KeyRing([(hash_secret(b"k1"), ApiKey("client-1", frozenset({"decide", "outcomes"})))])


def call(app, path: str = "/v1/decisions", headers: list | None = None, client: tuple = ("10.0.0.1", 5000)) -> dict:
    """One request through `app` (the worker's key ring holds the key "k1"): {'status', 'headers', 'body'}."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers or [], "client": client,
             "state": {STATE_KEY: KEYS}}
    asyncio.run(app(scope, receive, send))
    return {"status": sent[0]["status"], "headers": dict(sent[0]["headers"]), "body": sent[1]["body"]}


def limited(rate_per_s: float = 0.1, burst: int = 2, **kwargs) -> RateLimit:
    return RateLimit(ok, TokenBuckets(rate_per_s, burst, max_keys=100, clock=Clock()), **kwargs)


def test_over_its_rate_a_client_gets_429_with_retry_after_and_a_message():
    metrics = ServiceMetrics()
    app = limited(metrics=metrics)
    assert [call(app)["status"] for _ in range(2)] == [200, 200]
    refused = call(app)
    assert refused["status"] == 429
    assert refused["headers"][b"retry-after"] == b"10"  # a token every 10 s, in whole seconds
    assert refused["headers"][b"content-type"] == b"application/json"
    assert json.loads(refused["body"]) == {
        "detail": "rate limit exceeded: at most 0.1 requests/s per client (bursts of 2); retry after 10 s"
    }
    assert int(refused["headers"][b"content-length"]) == len(refused["body"])
    assert metrics.total("hyperlift_rate_limited_requests_total", route="decisions") == 1


def test_retry_after_is_at_least_one_second():
    app = limited(rate_per_s=50.0, burst=1)
    call(app)
    assert call(app)["headers"][b"retry-after"] == b"1"


def test_clients_are_limited_apart_and_refusals_are_counted_by_route_family_without_keys():
    metrics = ServiceMetrics()
    app = limited(burst=1, metrics=metrics)
    assert call(app)["status"] == 200
    assert call(app, client=("10.0.0.2", 1))["status"] == 200  # another address
    auth = [(b"authorization", b"Bearer k1")]
    assert call(app, headers=auth)["status"] == 200  # a key: its own bucket, whatever its address
    assert call(app, headers=auth, client=("10.0.0.9", 1), path="/v1/outcomes")["status"] == 429
    assert call(app, path="/v1/whatever")["status"] == 429
    exposition = "\n".join(
        f"{s.name}{s.labels}" for m in metrics.registry.collect() for s in m.samples if "rate_limited" in s.name
    )
    assert metrics.total("hyperlift_rate_limited_requests_total", route="outcomes") == 1
    assert metrics.total("hyperlift_rate_limited_requests_total", route="other") == 1
    assert "10.0.0" not in exposition and "k1" not in exposition and "client-1" not in exposition


def test_the_identity_function_is_a_parameter():
    app = limited(burst=1, key_of=lambda scope: "everyone")
    assert call(app, client=("10.0.0.1", 1))["status"] == 200
    assert call(app, client=("10.0.0.2", 1))["status"] == 429


def test_probes_and_scrapes_are_never_limited():
    app = limited(burst=1)
    for path in ("/healthz", "/readyz", "/metrics") * 5:
        assert call(app, path=path)["status"] == 200


def lifespan_of(app) -> list[str]:
    """Run `app`'s lifespan start-up and shutdown; the message types it sent."""
    sent: list[str] = []
    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict:
        return next(incoming)

    async def send(message: dict) -> None:
        sent.append(message["type"])

    async def run() -> None:
        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)

    asyncio.run(run())
    return sent


def test_without_a_runtime_the_lifespan_passes_through_and_nothing_is_limited():
    async def lifespan_app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            for reply in ("lifespan.startup.complete", "lifespan.shutdown.complete"):
                await receive()
                await send({"type": reply})
            return
        await ok(scope, receive, send)

    app = RateLimit(lifespan_app)
    assert lifespan_of(app) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert app.buckets is None
    assert all(call(app)["status"] == 200 for _ in range(300))


def test_the_service_limits_every_route_but_probes_by_its_settings(serving_settings):
    settings = serving_settings.model_copy(update={"rate_limit_per_s": 0.01, "rate_limit_burst": 3})
    with TestClient(create_app(settings)) as client:
        statuses = [client.post("/v1/decisions", json={"user_id": 1, "surface": "home"}).status_code for _ in range(3)]
        decision = client.post("/v1/decisions", json={"user_id": 1, "surface": "home"})  # the raw-ASGI fast path
        outcome = client.post("/v1/outcomes", json={"user_id": 1, "revenue": 1.0})  # a FastAPI route
        probes = [client.get(path).status_code for path in ("/healthz", "/readyz") * 3]
        metrics = client.app.state.runtime.service.metrics
    assert statuses == [200, 200, 200]
    assert decision.status_code == outcome.status_code == 429
    assert decision.headers["retry-after"] == outcome.headers["retry-after"] == "100"
    assert "at most 0.01 requests/s per client (bursts of 3)" in decision.json()["detail"]
    assert 429 not in probes
    assert metrics.total("hyperlift_rate_limited_requests_total", route="decisions") == 1
    assert metrics.total("hyperlift_rate_limited_requests_total", route="outcomes") == 1


def test_by_default_the_service_does_not_limit(serving_settings):
    assert serving_settings.rate_limit_per_s == 0
    with TestClient(create_app(serving_settings)) as client:
        # a bad body: answered 422 by the fast path at once, so 150 requests (over the default burst) stay cheap
        statuses = {client.post("/v1/decisions", content=b"{}").status_code for _ in range(150)}
    assert statuses == {422}
