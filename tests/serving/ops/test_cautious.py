"""The per-surface cautious switch: shared by every worker through Redis, polled off the decision path, and enforced
by the decision service (a neutral share, exploration lowered, bonus off) on the cautious surface only."""

import redis

from infra.redis_server import free_port
from serving.core.runtime import build_runtime
from serving.core.schemas import DecisionRequest
from serving.ops.cautious import CAUTIOUS_NEUTRAL, CautiousPolicy, CautiousSwitch
from training.guards.config import CautiousConfig

CONFIG = CautiousConfig(neutral_share=0.3, epsilon=0.01, temperature_factor=0.5, uncertainty_bonus=0.0)


def switch(url: str) -> CautiousSwitch:
    return CautiousSwitch(redis.Redis.from_url(url, socket_timeout=0.2, socket_connect_timeout=0.2, retry=None),
                          CONFIG, poll_s=0)


def test_one_worker_turning_a_surface_cautious_reaches_the_others_at_their_next_poll(redis_databases):
    url = redis_databases.fresh()
    guard, worker = switch(url), switch(url)
    worker.refresh()
    assert worker.policy_for("home") is None
    guard.set("home", True, "drift alarm on avg_order_value", "guard:drift")
    assert worker.policy_for("home") is None  # nothing reaches a worker between polls: no Redis call per decision
    worker.refresh()
    policy = worker.policy_for("home")
    assert policy == CautiousPolicy(0.3, 0.01, 0.5, 0.0, "drift alarm on avg_order_value")
    assert worker.policy_for("checkout") is None and worker.surfaces == ["home"]
    guard.set("home", False, "resolved", "cli:someone")
    worker.refresh()
    assert worker.policy_for("home") is None and worker.records["home"]["actor"] == "cli:someone"


def test_a_failed_poll_keeps_the_last_state_and_is_counted(redis_databases):
    url = redis_databases.fresh()
    worker = switch(url)
    switch(url).set("home", True, "alarm", "guard:drift")
    worker.refresh()
    worker.client = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.05,
                                         socket_timeout=0.05, retry=None)
    worker.refresh()
    assert worker.poll_failures == 1 and worker.policy_for("home") is not None


def test_cautious_overrides_cap_epsilon_lower_the_temperature_and_drop_the_bonus():
    policy = CautiousPolicy.of(CONFIG)
    assert policy.overrides({}, epsilon=0.2, temperature=0.1) == {
        "epsilon": 0.01, "temperature": 0.05, "uncertainty_bonus": 0.0}
    arm = policy.overrides({"epsilon": 0.001, "uncertainty_bonus": 1.0, "holdout": False}, 0.2, 0.1)
    assert arm == {"epsilon": 0.001, "temperature": 0.05, "uncertainty_bonus": 0.0, "holdout": False}


def consented_users(served_world) -> list[int]:
    users = served_world[2]
    return [int(u) for u in users.loc[users["consent_marketing"] & users["region"].isin(["south", "west"]), "user_id"]]


def test_the_service_applies_the_cautious_policy_to_the_cautious_surface_only(serving_settings, served_world):
    service = build_runtime(serving_settings).service
    switch(serving_settings.redis_url).set("home", True, "drift alarm", "guard:drift")  # the guard, elsewhere
    users = (consented_users(served_world) * 8)[:400]
    service.decide(DecisionRequest(user_id=users[0], surface="home"))  # decisions never read the switch from Redis
    assert service.metrics.total("hyperlift_cautious_decisions_total") == 0
    service.cautious.refresh()  # the worker's poll
    home = [service.decide(DecisionRequest(user_id=u, surface="home")) for u in users]
    cart = [service.decide(DecisionRequest(user_id=u, surface="cart")) for u in users[:100]]
    assert len(home) == 400
    neutral = [r for r in home if r.fallback == CAUTIOUS_NEUTRAL]
    assert all(r.actions[0].action_id == "no_action" and r.actions[0].propensity == 1.0 for r in neutral)
    assert 0.3 * 400 - 3 * 9.2 < len(neutral) < 0.3 * 400 + 3 * 9.2  # binomial(400, 0.3): sd 9.2
    drawn = [r.actions[0].propensity for r in home if r.fallback is None]
    # epsilon 0.2 → 0.01 over three actions: 0.01/3 or 1 − 0.01 + 0.01/3 (the surface's own would give 0.067 / 0.867)
    assert drawn and all(abs(p - 0.01 / 3) < 1e-9 or abs(p - (0.99 + 0.01 / 3)) < 1e-9 for p in drawn)
    assert not [r for r in cart if r.fallback == CAUTIOUS_NEUTRAL]
    m = service.metrics
    assert m.total("hyperlift_cautious_decisions_total", surface="home") == 400
    assert m.total("hyperlift_cautious_decisions_total", surface="cart") == 0
    assert m.total("hyperlift_fallbacks_total", reason=CAUTIOUS_NEUTRAL) == len(neutral)
    assert m.total("hyperlift_cautious_surfaces") == 1
    service.cautious.set("home", False, "resolved", "cli:someone")
    after = [service.decide(DecisionRequest(user_id=u, surface="home")) for u in users[:50]]
    assert not [r for r in after if r.fallback == CAUTIOUS_NEUTRAL]
    service.trace.close(timeout_s=0.5)
