"""Freshness contracts in the decision path: each view's row age against its contract, counted, used or fallen back.

Real Redis, Feast and MLflow: the contracts come from the Feast registry, the timestamps from Feast's online rows.
Every user's last activity snapshot is stamped at the shop's end, so "now" (HYPERLIFT_SERVING_NOW) sets the age.
"""

from datetime import datetime, timedelta

import pytest
import redis
from fastapi.testclient import TestClient

from feature_repo.definitions import build_repo
from feature_repo.freshness import FreshnessContract, MissingFreshnessContract, freshness_tags
from feature_repo.store import feature_store
from serving.core.runtime import build_runtime
from serving.main import create_app
from serving.core.schemas import DecisionRequest
from serving.decision.service import STALE_FEATURES, DecisionService
from tests.serving.conftest import SHOP, register_model
from training.lifecycle import promote, rollback

END = SHOP.end  # the stamp of every user's last activity snapshot
ACTIVITY_MAX_STALENESS = timedelta(days=2)  # user_activity_fv's contract in feature_repo/definitions.py
STALE = "hyperlift_stale_feature_reads_total"
NEUTRAL = [("no_action", 0.0, 1.0)]


def chosen(response) -> list[tuple[str, float, float]]:
    return [(a.action_id, a.score, a.propensity) for a in response.actions]


def consented(served_world) -> list[int]:
    users = served_world[2]
    return [int(u) for u in users.loc[users["consent_marketing"] & users["region"].isin(["south", "west"]), "user_id"]]


def service_at(serving_settings, monkeypatch, now: datetime) -> DecisionService:
    monkeypatch.setenv("HYPERLIFT_SERVING_NOW", now.isoformat())
    return build_runtime(serving_settings.model_copy(update={"now": now})).service


@pytest.fixture
def declare(served_world):
    """Re-declare user_activity_fv's freshness tags in the Feast registry for one test; the shipped ones after."""
    settings, redis_url, _ = served_world
    store = feature_store(redis_url, settings)

    def apply(tags: dict[str, str]) -> None:
        view = build_repo(settings.data_dir).user_activity_fv
        view.tags = {"owner": "hyperlift", **tags}
        store.apply([view])

    yield apply
    store.apply([build_repo(settings.data_dir).user_activity_fv])


def test_a_read_as_old_as_the_contract_allows_is_served_by_the_policy_and_not_counted(
    serving_settings, served_world, monkeypatch
):
    service = service_at(serving_settings, monkeypatch, END + ACTIVITY_MAX_STALENESS)  # the boundary is still fresh
    response = service.decide(DecisionRequest(user_id=consented(served_world)[0], surface="home"))
    assert response.fallback is None
    (action,) = response.actions
    assert action.propensity in (pytest.approx(0.2 / 3), pytest.approx(0.8 + 0.2 / 3))  # epsilon-greedy drew it
    assert service.metrics.total(STALE) == 0


def test_a_view_older_than_its_fallback_contract_gives_the_neutral_action_and_one_count(
    serving_settings, served_world, monkeypatch
):
    service = service_at(serving_settings, monkeypatch, END + ACTIVITY_MAX_STALENESS + timedelta(seconds=1))
    response = service.decide(DecisionRequest(user_id=consented(served_world)[0], surface="home"))
    assert response.fallback == STALE_FEATURES and chosen(response) == NEUTRAL
    assert response.model is not None and response.feature_service == "uplift_v1"
    assert service.metrics.total(STALE) == 1  # the profile (stamped at sign-up, 3650 days allowed) is fresh
    assert service.metrics.total(STALE, feature_view="user_activity_fv", policy="fallback") == 1
    assert service.metrics.total("hyperlift_fallbacks_total", reason=STALE_FEATURES) == 1


def test_a_stale_view_under_use_is_scored_as_if_fresh_and_counted(serving_settings, served_world, monkeypatch, declare):
    declare(freshness_tags(FreshnessContract(ACTIVITY_MAX_STALENESS, "use")))
    user = consented(served_world)[1]
    fresh = service_at(serving_settings, monkeypatch, END)
    stale = service_at(serving_settings, monkeypatch, END + timedelta(days=3))
    fresh_response = fresh.decide(DecisionRequest(user_id=user, surface="home"))
    stale_response = stale.decide(DecisionRequest(user_id=user, surface="home"))
    assert stale_response.fallback is None and fresh_response.fallback is None
    assert chosen(stale_response) == chosen(fresh_response)  # same features, same seed: the same draw
    assert stale_response.actions[0].propensity < 1.0
    assert fresh.metrics.total(STALE) == 0
    assert stale.metrics.total(STALE) == 1 and stale.metrics.total(STALE, feature_view="user_activity_fv", policy="use") == 1


def activity_row(service: DecisionService, user: int) -> tuple[bytes, list[bytes]]:
    """The user's Redis key (by the pseudonym of raw id `user`, the service's key) and the hash fields of
    user_activity_fv (its values, then `_ts:user_activity_fv`)."""
    (champion,) = service.champions.values()
    view = next(v for v in champion.features._views if v.name == "user_activity_fv")
    return champion.features._key(service.pseudonymizer(user)), list(view.fields)


@pytest.fixture
def hidden_fields(served_world):
    """Delete hash fields of a user's Feast row for one test and put them back after."""
    client = redis.Redis.from_url(served_world[1])
    saved: list[tuple[bytes, dict]] = []

    def hide(key: bytes, fields: list[bytes]) -> None:
        saved.append((key, dict(zip(fields, client.hmget(key, fields)))))
        client.hdel(key, *fields)

    yield hide
    for key, values in saved:
        client.hset(key, mapping={f: v for f, v in values.items() if v is not None})


def test_values_without_a_timestamp_count_as_stale(serving_settings, served_world, monkeypatch, hidden_fields):
    service = service_at(serving_settings, monkeypatch, END)
    user = consented(served_world)[2]
    key, fields = activity_row(service, user)
    hidden_fields(key, [b"_ts:user_activity_fv"])
    read = service.champions[("hyperlift_uplift", "champion")].features.read(service.pseudonymizer(user),
                                                                             ["page_views_total"])
    assert read.event_timestamps["user_activity_fv"] is None and read.by_name["page_views_total"] is not None
    response = service.decide(DecisionRequest(user_id=user, surface="home"))
    assert response.fallback == STALE_FEATURES and chosen(response) == NEUTRAL
    assert service.metrics.total(STALE, feature_view="user_activity_fv", policy="fallback") == 1


def test_a_view_with_no_row_for_the_user_is_missing_not_stale(serving_settings, served_world, monkeypatch, hidden_fields):
    service = service_at(serving_settings, monkeypatch, END)
    user = consented(served_world)[3]
    key, fields = activity_row(service, user)
    hidden_fields(key, fields)  # the profile row stays: the user is known, the activity values are NaN
    response = service.decide(DecisionRequest(user_id=user, surface="home"))
    assert response.fallback is None and response.actions[0].propensity < 1.0
    assert service.metrics.total(STALE) == 0


def test_a_view_without_a_contract_stops_start_up_with_what_to_add(serving_settings, declare):
    declare({})
    with pytest.raises(MissingFreshnessContract, match=(
        r"hyperlift_uplift v1 reads feature service 'uplift_v1': feature view 'user_activity_fv' declares no "
        r"freshness contract; add \*\*freshness_tags\(FreshnessContract\("
    )):
        build_runtime(serving_settings)


def test_a_new_champion_whose_views_lack_a_contract_is_refused_and_the_current_one_keeps_serving(
    serving_settings, served_world, declare
):
    settings, _, _ = served_world
    runtime = build_runtime(serving_settings)
    declare({})
    version = register_model(settings, "hyperlift_uplift", "uplift_v1", alias="challenger", seed=9)
    promote(settings.mlflow_uri, "hyperlift_uplift", version)
    try:
        assert runtime.watcher.refresh() == 0
        assert runtime.service.metrics.total("hyperlift_model_refresh_failures_total") == 1
        assert runtime.service.decide(DecisionRequest(user_id=3, surface="home")).model.version == "1"
    finally:
        rollback(settings.mlflow_uri, "hyperlift_uplift")


def test_the_fixed_clock_the_contracts_and_the_counts_are_exposed(serving_settings, served_world, monkeypatch):
    now = END + timedelta(days=3)
    with TestClient(create_app(serving_settings.model_copy(update={"now": now}))) as client:
        assert client.app.state.runtime.service.clock.now() == now
        assert client.get("/healthz").json()["freshness"] == {
            "now": "2026-10-08T00:00:00+00:00",
            "views": {
                "user_activity_fv": {"max_staleness_s": 172800.0, "on_stale": "fallback"},
                "user_profile_fv": {"max_staleness_s": 315360000.0, "on_stale": "use"},
            },
        }
        body = client.post("/v1/decisions", json={"user_id": consented(served_world)[4], "surface": "home"}).json()
        assert body["fallback"] == STALE_FEATURES
        stats = client.get("/v1/stats").json()
        assert stats["stale_feature_reads"] == {"user_activity_fv": 1} and stats["fallbacks"] == {STALE_FEATURES: 1}
        exposition = client.get("/metrics").text
        assert 'hyperlift_stale_feature_reads_total{feature_view="user_activity_fv",policy="fallback"} 1.0' in exposition


def test_without_the_setting_the_wall_clock_judges_and_the_october_shop_is_stale(
    serving_settings, served_world, monkeypatch
):
    monkeypatch.delenv("HYPERLIFT_SERVING_NOW")
    service = build_runtime(serving_settings.model_copy(update={"now": None})).service
    assert service.clock.fixed is None and service.clock.describe() == "wall clock"
    if service.clock.now() <= END + ACTIVITY_MAX_STALENESS:
        pytest.skip("this machine's clock is set before the simulated shop ended")
    response = service.decide(DecisionRequest(user_id=consented(served_world)[0], surface="home"))
    assert response.fallback == STALE_FEATURES
