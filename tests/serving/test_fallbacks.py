"""Faults in dependencies degrade to the documented fallbacks and are counted."""

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from feature_repo.store import feature_store
from infra.redis_server import free_port
from serving.champion import FeatureServiceMissing, load_champion
from serving.decision_log import DecisionLog
from serving.main import build_service, create_app
from serving.service import FEATURES_UNAVAILABLE, NO_MODEL, DecisionService
from serving.schemas import DecisionRequest
from tests.serving.conftest import register_model


def test_redis_down_answers_with_the_control_and_counts_it(serving_settings, served_world):
    service, _ = build_service(serving_settings)
    dead = f"redis://127.0.0.1:{free_port()}/0"
    service.champion.features.store = feature_store(dead, served_world[0])
    service.decision_log = DecisionLog(redis.Redis.from_url(dead, socket_connect_timeout=0.05), "s", 10)
    response = service.decide(DecisionRequest(user_id=1, surface="home"))
    assert response.fallback == FEATURES_UNAVAILABLE
    assert [a.action_id for a in response.actions] == ["no_action"]
    assert response.model is not None  # the champion is still named: only its inputs were missing
    assert service.metrics.fallbacks == {FEATURES_UNAVAILABLE: 1}
    assert service.decision_log.failures == 1


def test_no_champion_serves_the_control_and_reports_degraded(serving_settings):
    serving_settings.model_name = "no_such_model"
    with TestClient(create_app(serving_settings)) as client:
        assert client.get("/healthz").json() == {"status": "degraded", "model": None, "feature_service": None}
        body = client.post("/v1/decisions", json={"user_id": 1, "surface": "home"}).json()
        assert body["fallback"] == NO_MODEL and body["model"] is None
        assert body["actions"] == [{"action_id": "no_action", "score": 0.0, "propensity": 1.0}]


def test_model_whose_feature_service_is_not_registered_is_refused(served_world):
    settings, redis_url, _ = served_world
    register_model(settings, "model_on_future_features", "uplift_v9")
    with pytest.raises(FeatureServiceMissing, match=r"trained with feature service 'uplift_v9', which the Feast registry does not have"):
        load_champion(settings.mlflow_uri, "model_on_future_features", "champion", feature_store(redis_url, settings))


def test_decision_log_failure_never_fails_the_decision():
    log = DecisionLog(redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.05), "s", 10)
    service = DecisionService(None, log, 0.1, "no_action", np.random.default_rng(0))
    response = service.decide(DecisionRequest(user_id=1, surface="home"))
    assert response.fallback == NO_MODEL
    assert log.failures == 1


def test_a_hung_redis_gives_the_fallback_instead_of_a_hang(serving_settings, served_world):
    """A server that accepts connections but never answers: each call ends at the timeout, with no retries."""
    import socket

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)
    try:
        url = f"redis://127.0.0.1:{hung.getsockname()[1]}/0"
        service, _ = build_service(serving_settings)
        service.champion.features.store = feature_store(url, served_world[0], redis_timeout_s=0.05)
        service.decision_log = DecisionLog(
            redis.Redis.from_url(url, socket_timeout=0.05, socket_connect_timeout=0.05, retry=None), "s", 10
        )
        for user in range(3):
            response = service.decide(DecisionRequest(user_id=user, surface="home"))
            assert response.fallback == FEATURES_UNAVAILABLE
        assert service.metrics.fallbacks == {FEATURES_UNAVAILABLE: 3} and service.decision_log.failures == 3
    finally:
        hung.close()


def test_serving_store_bounds_redis_calls_and_disables_retries(serving_settings):
    service, _ = build_service(serving_settings)
    connection = service.champion.features.store.config.online_store.connection_string
    assert connection.endswith(",socket_timeout=0.05,socket_connect_timeout=0.05,retry=null")


def test_repeated_failures_open_the_breaker_and_it_closes_when_redis_is_back(serving_settings, served_world):
    from serving.breaker import CircuitBreaker
    from serving.service import FEATURES_CIRCUIT_OPEN

    settings, redis_url, _ = served_world
    service, _ = build_service(serving_settings)
    now = [0.0]
    service.breaker = CircuitBreaker(failure_threshold=2, cooldown_s=5, clock=lambda: now[0])
    healthy = service.champion.features.store
    service.champion.features.store = feature_store(f"redis://127.0.0.1:{free_port()}/0", settings, redis_timeout_s=0.05)
    fallbacks = [service.decide(DecisionRequest(user_id=1, surface="home")).fallback for _ in range(4)]
    assert fallbacks == [FEATURES_UNAVAILABLE, FEATURES_UNAVAILABLE, FEATURES_CIRCUIT_OPEN, FEATURES_CIRCUIT_OPEN]
    service.champion.features.store = healthy  # Redis is back
    assert service.decide(DecisionRequest(user_id=1, surface="home")).fallback == FEATURES_CIRCUIT_OPEN
    now[0] = 5.0  # cooldown over: the half-open trial succeeds and closes the breaker
    assert service.decide(DecisionRequest(user_id=1, surface="home")).fallback is None
    assert service.breaker.state == "closed" and service.breaker.opened == 1


def test_recently_seen_users_are_scored_on_their_last_known_good_features(serving_settings, served_world):
    from serving.service import LAST_KNOWN_GOOD

    settings, _, users = served_world
    seen, unseen = (int(u) for u in users.loc[users["consent_marketing"], "user_id"].iloc[:2])
    service, _ = build_service(serving_settings)
    service.epsilon = 0.0
    online = service.decide(DecisionRequest(user_id=seen, surface="home"))
    assert online.fallback is None
    service.champion.features.store = feature_store(f"redis://127.0.0.1:{free_port()}/0", settings, redis_timeout_s=0.05)
    remembered = service.decide(DecisionRequest(user_id=seen, surface="home"))
    assert remembered.fallback == LAST_KNOWN_GOOD
    assert remembered.actions == online.actions  # same features, same model, no exploration: same choice
    assert service.decide(DecisionRequest(user_id=unseen, surface="home")).fallback == FEATURES_UNAVAILABLE
