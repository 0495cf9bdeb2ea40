"""Faults in dependencies degrade to the documented fallbacks and are counted; nothing raises to the caller."""

import socket

import pytest
import redis
from fastapi.testclient import TestClient

from feature_repo.store import feature_store
from infra.redis_server import free_port
from serving.ops.breaker import CircuitBreaker
from serving.decision.champion import FeatureServiceMissing, load_champion
from serving.core.runtime import build_runtime
from serving.main import create_app
from serving.core.schemas import DecisionRequest
from serving.decision.service import (
    DEADLINE, FEATURES_CIRCUIT_OPEN, FEATURES_LATE, FEATURES_UNAVAILABLE, LAST_KNOWN_GOOD, NO_MODEL,
    POLICY_STORE_UNAVAILABLE,
)
from serving.store.round_trip import RoundTrip
from tests.serving.conftest import SURFACES, register_model, write_policy_dir

NEUTRAL = [("no_action", 1.0)]


def chosen(response) -> list[tuple[str, float]]:
    return [(a.action_id, a.propensity) for a in response.actions]


def consented_users(served_world) -> list[int]:
    users = served_world[2]
    return [int(u) for u in users.loc[users["consent_marketing"] & users["region"].isin(["south", "west"]), "user_id"]]


def dead_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def dead_client() -> redis.Redis:
    return redis.Redis.from_url(dead_url(), socket_connect_timeout=0.05, socket_timeout=0.05, retry=None)


def test_redis_down_answers_with_the_neutral_action_and_counts_it(serving_settings):
    serving_settings.redis_url = dead_url()
    service = build_runtime(serving_settings).service
    response = service.decide(DecisionRequest(user_id=1, surface="home"))
    assert response.fallback == FEATURES_UNAVAILABLE and chosen(response) == NEUTRAL
    assert response.model is not None  # the champion is still named: only its inputs were missing
    assert service.metrics.total("hyperlift_fallbacks_total", reason=FEATURES_UNAVAILABLE) == 1
    assert service.trace.flush() is False  # Redis is down: the record waits on local disk for it, nothing dropped
    assert service.trace.stats.spilled == service.trace.unsent_records == 1 and service.trace.dropped == 0
    assert service.metrics.total("hyperlift_decision_log_spilled_total") == 1
    assert service.metrics.total("hyperlift_decision_log_failures_total") == 0
    service.trace.close(timeout_s=0.1)


def test_no_champion_serves_the_neutral_action_and_reports_degraded(serving_settings, tmp_path):
    surfaces = {"home": {**SURFACES["home"], "model": {"name": "no_such_model", "alias": "champion"}}}
    policy = write_policy_dir(tmp_path / "nomodel", surfaces=surfaces)
    serving_settings.config_dir, serving_settings.experiments_file = policy, policy / "experiments.yaml"
    with TestClient(create_app(serving_settings)) as client:
        health = client.get("/healthz").json()
        assert health["status"] == "degraded" and health["models"] == {"no_such_model@champion": None}
        assert client.get("/readyz").status_code == 503
        body = client.post("/v1/decisions", json={"user_id": 1, "surface": "home"}).json()
        assert body["fallback"] == NO_MODEL and body["model"] is None
        assert body["actions"] == [{"action_id": "no_action", "score": 0.0, "propensity": 1.0}]


def test_model_whose_feature_service_is_not_registered_is_refused(served_world):
    settings, redis_url, _ = served_world
    register_model(settings, "model_on_future_features", "uplift_v9")
    with pytest.raises(FeatureServiceMissing, match=r"trained with feature service 'uplift_v9', which the Feast registry does not have"):
        load_champion(settings.mlflow_uri, "model_on_future_features", "champion", feature_store(redis_url, settings))


def test_surface_whose_feature_service_differs_from_the_champions_is_refused_at_start(serving_settings, tmp_path):
    surfaces = {"home": {**SURFACES["home"], "feature_service": "uplift_v2"}}
    policy = write_policy_dir(tmp_path / "v2", surfaces=surfaces)
    serving_settings.config_dir, serving_settings.experiments_file = policy, policy / "experiments.yaml"
    with pytest.raises(FeatureServiceMissing, match=r"surface 'home' reads feature service 'uplift_v2' but hyperlift_uplift@champion \(v1\) was trained on 'uplift_v1'"):
        build_runtime(serving_settings)


def test_a_hung_redis_gives_the_fallback_instead_of_a_hang(serving_settings):
    """A server that accepts connections but never answers: each call ends at the timeout, with no retries."""
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)
    try:
        serving_settings.redis_url = f"redis://127.0.0.1:{hung.getsockname()[1]}/0"
        service = build_runtime(serving_settings).service
        for user in range(3):
            assert service.decide(DecisionRequest(user_id=user, surface="home")).fallback == FEATURES_UNAVAILABLE
        assert service.metrics.total("hyperlift_fallbacks_total", reason=FEATURES_UNAVAILABLE) == 3
    finally:
        hung.close()


def test_serving_bounds_redis_calls_and_disables_retries(serving_settings):
    service = build_runtime(serving_settings).service
    champion = service.champions[("hyperlift_uplift", "champion")]
    connection = champion.features.store.config.online_store.connection_string
    assert connection.endswith(",socket_timeout=0.05,socket_connect_timeout=0.05,retry=null")
    kwargs = service.client.connection_pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"], kwargs["retry"]) == (0.05, 0.05, None)


def test_repeated_failures_open_the_breaker_and_it_closes_when_redis_is_back(serving_settings, served_world):
    service = build_runtime(serving_settings).service
    now = [0.0]
    service.breaker = CircuitBreaker(failure_threshold=2, cooldown_s=5, clock=lambda: now[0])
    healthy = service.client
    service.client = dead_client()
    fallbacks = [service.decide(DecisionRequest(user_id=1, surface="home")).fallback for _ in range(4)]
    assert fallbacks == [FEATURES_UNAVAILABLE, FEATURES_UNAVAILABLE, FEATURES_CIRCUIT_OPEN, FEATURES_CIRCUIT_OPEN]
    service.client = healthy  # Redis is back
    assert service.decide(DecisionRequest(user_id=1, surface="home")).fallback == FEATURES_CIRCUIT_OPEN
    now[0] = 5.0  # cooldown over: the half-open trial succeeds and closes the breaker
    assert service.decide(DecisionRequest(user_id=1, surface="home")).fallback is None
    assert service.breaker.state == "closed" and service.breaker.opened == 1


def test_recently_seen_users_are_scored_on_their_last_known_good_features(serving_settings, served_world, tmp_path):
    seen, unseen = consented_users(served_world)[:2]
    surfaces = {"home": {**SURFACES["home"], "exploration": {"method": "greedy"}}}
    policy = write_policy_dir(tmp_path / "greedy", surfaces=surfaces)
    serving_settings.config_dir, serving_settings.experiments_file = policy, policy / "experiments.yaml"
    service = build_runtime(serving_settings).service
    online = service.decide(DecisionRequest(user_id=seen, surface="home"))
    assert online.fallback is None
    service.client = dead_client()
    remembered = service.decide(DecisionRequest(user_id=seen, surface="home"))
    assert remembered.fallback == LAST_KNOWN_GOOD
    assert remembered.actions == online.actions  # same features, same model, no exploration: same choice
    assert service.decide(DecisionRequest(user_id=unseen, surface="home")).fallback == FEATURES_UNAVAILABLE


def test_cached_features_without_counters_means_no_capped_promotion(serving_settings, served_world):
    """Redis down after a user was seen: home (no caps) scores the cached features; push cannot check its cap, so
    it serves the neutral action."""
    service = build_runtime(serving_settings).service
    user = consented_users(served_world)[0]
    assert service.decide(DecisionRequest(user_id=user, surface="push")).fallback is None
    service.client = dead_client()
    assert service.decide(DecisionRequest(user_id=user, surface="home")).fallback == LAST_KNOWN_GOOD
    response = service.decide(DecisionRequest(user_id=user, surface="push"))
    assert response.fallback == POLICY_STORE_UNAVAILABLE and chosen(response) == NEUTRAL


def test_redis_failing_between_read_and_reservation_serves_nothing_it_cannot_record(
    serving_settings, served_world, monkeypatch
):
    service = build_runtime(serving_settings).service
    trips: list[list[tuple]] = []
    execute = RoundTrip.execute

    def fail_after_the_read(pipe, raise_on_error=True):
        trips.append(list(pipe.command_stack))
        if len(trips) > 1:  # Redis goes away after the feature read, before the reservation
            raise redis.exceptions.ConnectionError("Redis went away")
        return execute(pipe, raise_on_error)

    monkeypatch.setattr(RoundTrip, "execute", fail_after_the_read)
    user = consented_users(served_world)[0]
    response = service.decide(DecisionRequest(user_id=user, surface="push"))
    assert response.fallback == POLICY_STORE_UNAVAILABLE and chosen(response) == NEUTRAL
    assert [command[0] for command in trips[1]] == ["EVALSHA", "EVALSHA"]  # the cap and the budget of the push


def test_features_over_their_deadline_fall_back_deterministically(serving_settings, served_world, tmp_path):
    surfaces = {"home": {**SURFACES["home"], "deadlines": {"features_ms": 0.001, "scoring_ms": 10, "total_ms": 40}}}
    policy = write_policy_dir(tmp_path / "late", surfaces=surfaces)
    serving_settings.config_dir, serving_settings.experiments_file = policy, policy / "experiments.yaml"
    service = build_runtime(serving_settings).service
    response = service.decide(DecisionRequest(user_id=consented_users(served_world)[0], surface="home"))
    assert response.fallback == FEATURES_LATE and chosen(response) == NEUTRAL
    assert service.metrics.total("hyperlift_deadline_breaches_total", segment="features") == 1


def test_scoring_that_cannot_fit_the_total_budget_is_skipped(serving_settings, served_world, tmp_path):
    surfaces = {"home": {**SURFACES["home"], "deadlines": {"features_ms": 30, "scoring_ms": 10, "total_ms": 40}}}
    policy = write_policy_dir(tmp_path / "tight", surfaces=surfaces)
    serving_settings.config_dir, serving_settings.experiments_file = policy, policy / "experiments.yaml"
    service = build_runtime(serving_settings).service
    service._scoring_ewma_s["home"] = 0.050  # scoring has been taking 50 ms: it cannot fit in a 40 ms budget
    response = service.decide(DecisionRequest(user_id=consented_users(served_world)[0], surface="home"))
    assert response.fallback == DEADLINE and chosen(response) == NEUTRAL


def test_a_revocation_through_another_worker_keeps_the_cached_grant_from_being_served(serving_settings, served_world):
    """Worker A cached a consented user's features; the user revoked through worker B; Redis then failed: A must not
    serve the cached grant (its consent watcher saw the revocation in the audit stream)."""
    runtime = build_runtime(serving_settings)
    service, revoked_user, other = runtime.service, *consented_users(served_world)[:2]
    for user in (revoked_user, other):
        assert service.decide(DecisionRequest(user_id=user, surface="home")).fallback is None
    runtime.consent_watcher.start()
    runtime.consent_watcher.stop()  # only its position at the stream's end: the test polls by hand
    worker_b = build_runtime(serving_settings)
    # Worker B's route stores the revocation by the user's pseudonym (serving/api/routes/consent.py)
    revoked_id = worker_b.service.pseudonymizer(revoked_user)
    assert revoked_id == service.pseudonymizer(revoked_user) != revoked_user  # both workers: the home's one key
    worker_b.consent.record(revoked_id, "consent_marketing", False, ts=service.clock.time(), client_id="crm")
    assert runtime.consent_watcher.poll() == 1
    service.client = dead_client()
    refused = service.decide(DecisionRequest(user_id=revoked_user, surface="home"))
    assert refused.fallback == FEATURES_UNAVAILABLE and chosen(refused) == NEUTRAL
    assert service.decide(DecisionRequest(user_id=other, surface="home")).fallback == LAST_KNOWN_GOOD
    for trace in (service.trace, worker_b.service.trace):
        trace.close(timeout_s=0.1)
