"""Redis stopped in the middle of traffic: every decision is still answered (zero 5xx), from the documented
fallbacks, and counted; readiness reports it; outcomes say 503 (retry) rather than lose data silently; and neither
the answers nor the logs show raw user ids or Redis's address, commands or keys."""

import logging
from collections import Counter

import pytest
from fastapi.testclient import TestClient

from infra.redis_server import EmbeddedRedis
from infra.settings import HyperliftSettings
from serving.core.config import ServingSettings
from serving.decision.identity import user_key
from serving.main import create_app
from serving.decision.service import FEATURES_CIRCUIT_OPEN, FEATURES_UNAVAILABLE, LAST_KNOWN_GOOD, POLICY_STORE_UNAVAILABLE
from tests.feature_repo.factories import materialize_shop
from tests.serving.conftest import SHOP, register_model, write_policy_dir


@pytest.fixture
def own_redis_world(tmp_path, monkeypatch):
    """A shop materialized into a Redis server this test owns (so it can stop it)."""
    home = tmp_path / "hyperlift"
    settings = HyperliftSettings(home=home, reports_dir=home / "reports")
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    try:
        _, _, _, shop = materialize_shop(settings, url, SHOP)
        register_model(settings, "hyperlift_uplift", "uplift_v1")
        monkeypatch.setenv("HYPERLIFT_HOME", str(home))
        yield server, url, shop.users
    finally:
        server.stop()


def test_redis_stopped_mid_run_gives_fallbacks_and_no_5xx(own_redis_world, tmp_path):
    server, url, users = own_redis_world
    policy = write_policy_dir(tmp_path / "policy")
    settings = ServingSettings(
        redis_url=url, seed=1, config_dir=policy, experiments_file=policy / "experiments.yaml", model_refresh_s=0,
        log_decisions=False, breaker_failures=3, mode="dev",
    )
    # consented users where push is allowed, so the push surface needs its cap and budget counters
    allowed = users["consent_marketing"] & users["region"].isin(["south", "west"])
    user_ids = [int(u) for u in users.loc[allowed, "user_id"]][:20]
    statuses: Counter = Counter()
    fallbacks: Counter = Counter()
    logged = LogCapture()
    with TestClient(create_app(settings)) as client:
        logging.getLogger("serving").addHandler(logged)  # after start-up (serving.ops.json_logs sets the handlers)
        for user in user_ids:  # healthy: remembered as last known good
            response = client.post("/v1/decisions", json={"user_id": user, "surface": "home"})
            statuses[response.status_code] += 1
            assert response.json()["fallback"] is None
        server.stop()
        for user in user_ids * 2 + [10**9]:
            for surface in ("home", "push"):
                response = client.post("/v1/decisions", json={"user_id": user, "surface": surface})
                statuses[response.status_code] += 1
                fallbacks[response.json()["fallback"]] += 1
        stats = client.get("/v1/stats").json()
        client.app.state.runtime.service.safe_mode.refresh()
        ready = client.get("/readyz")
        outcome = client.post("/v1/outcomes", json={"user_id": 1, "revenue": 1.0})
        refused = [
            outcome,
            client.post("/v1/outcomes", json={"user_id": 1, "revenue": 1.0}, headers={"Idempotency-Key": "k1"}),
            client.post("/v1/admin/safe-mode", json={"enabled": True, "reason": "outage"}),
            client.post("/v1/events", json={"events": [page_view(user_ids[0])]}),
        ]
        logging.getLogger("serving").removeHandler(logged)
    assert statuses == {200: len(user_ids) * 5 + 2}
    # home has no caps: known users are scored on cached features; push has caps, which cannot be checked
    assert fallbacks[LAST_KNOWN_GOOD] == len(user_ids) * 2
    assert fallbacks[POLICY_STORE_UNAVAILABLE] == len(user_ids) * 2
    assert fallbacks[FEATURES_UNAVAILABLE] + fallbacks[FEATURES_CIRCUIT_OPEN] == 2  # the unknown user, twice
    assert stats["fallbacks"][LAST_KNOWN_GOOD] == len(user_ids) * 2
    assert stats["feature_store_breaker"]["opened"] >= 1
    assert ready.status_code == 503 and "Redis did not answer the last poll" in ready.json()["problems"]
    assert outcome.status_code == 503 and "retry later" in outcome.json()["detail"]
    assert [r.status_code for r in refused] == [503] * 4
    # what the issue found in 503 bodies and warnings: the address, commands, keys, raw user ids
    port = url.rsplit(":", 1)[1].split("/")[0]
    texts = [r.text for r in refused] + logged.messages
    assert logged.messages and all(r.json()["detail"].count("Redis connection failed (ConnectionError)") == 1
                                   for r in refused)
    for text in texts:
        for leak in ("127.0.0.1", f":{port}", "redis://", "Error 111", "Connection refused", "hyperlift:", "Command #"):
            assert leak not in text, (leak, text)
    reads = [m for m in logged.messages if "online store read failed" in m]
    assert reads and all(m.startswith("user ") for m in reads)
    assert {m.split(":")[0] for m in reads} <= {f"user {user_key(u, settings.hash_salt)}" for u in user_ids + [10**9]}


class LogCapture(logging.Handler):
    """Every record's message, as the service's log would show it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def page_view(user: int) -> dict:
    return {"event_id": "outage-1", "event_type": "page_view", "event_version": 1, "ts": SHOP.end.isoformat(),
            "user_id": user, "session_id": "s", "item_id": 1, "category_id": 1, "price": 1.0, "device": "mobile",
            "region": "south"}
