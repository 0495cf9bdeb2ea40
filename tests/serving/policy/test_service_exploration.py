"""Exploration through the decision service, on real Redis and a registered model: a thompson surface logs the
probabilities it drew with, and a decision redrawn after a reservation conflict is logged with `redraws` > 0,
counted, and refused by every estimator input (logged_training, training.ope)."""

import json

import pandas as pd
import pytest
import redis

from serving.core.runtime import build_runtime
from serving.core.schemas import DecisionRequest
from serving.decision.identity import user_key
from serving.policy.exploration import Exploration, action_probabilities
from tests.serving.conftest import RELAXED, SURFACES, write_policy_dir
from training.logged_training import logged_rows
from training.ope import bandit_feedback_from_decisions

PUSH = "push_reminder"
ACTIONS = ["no_action", "pct10_sitewide", PUSH]


def consented(served_world) -> list[int]:
    users = served_world[2]
    return [int(u) for u in users.loc[users["consent_marketing"] & users["region"].isin(["south", "west"]), "user_id"]]


def clear_counters(url: str) -> None:
    client = redis.Redis.from_url(url)
    for pattern in ("hyperlift:caps:*", "hyperlift:budget:*"):
        for key in client.scan_iter(pattern):
            client.delete(key)


def last_records(settings, n: int) -> list[dict]:
    stream = redis.Redis.from_url(settings.redis_url)
    return [json.loads(fields[b"record"]) for _, fields in stream.xrevrange(settings.decision_stream, count=n)][::-1]


def test_a_thompson_surface_logs_the_probabilities_it_drew_with(serving_settings, served_world, tmp_path):
    thompson = {"method": "thompson", "floor": 0.05}
    surfaces = {"ts": {"name": "ts", "feature_service": "uplift_v1", "exploration": thompson, "deadlines": RELAXED}}
    policy = write_policy_dir(tmp_path / "ts", surfaces=surfaces)
    serving_settings.config_dir, serving_settings.experiments_file = policy, policy / "experiments.yaml"
    service = build_runtime(serving_settings).service
    champion = service.champions[("hyperlift_uplift", "champion")]
    se = {"pct10_sitewide": 0.3, PUSH: 0.05}
    champion.model.uplift_se = se  # no distilled model: the holdout standard error is every user's σ
    assert champion.spread is None
    users = consented(served_world)[:30]
    responses = [service.decide(DecisionRequest(user_id=u, surface="ts")) for u in users]
    service.trace.flush()
    records = last_records(serving_settings, len(users))
    explored = 0
    for response, record in zip(responses, records):
        assert record["decision_id"] == response.decision_id and record["redraws"] == 0 and not response.redrawn
        sigma = [0.0 if a == "no_action" else se[a] for a in record["candidates"]]
        expected = action_probabilities(record["scores"], Exploration("thompson", floor=0.05), sigma)
        assert record["probabilities"] == expected.tolist()
        (action,) = response.actions
        assert action.propensity == record["chosen_probabilities"][0]
        assert action.propensity == expected[record["candidates"].index(action.action_id)]
        explored += 0.05 < max(expected) < 0.95
    assert explored > 0  # σ > 0 made some decisions genuinely random beyond the floor
    service.trace.close()


def test_a_decision_redrawn_after_a_reservation_conflict_is_logged_counted_and_excluded(serving_settings, served_world):
    """A concurrent request takes the user's last push slot between the read and the reservation."""
    clear_counters(serving_settings.redis_url)
    service = build_runtime(serving_settings).service
    surface = service.surfaces["push"]  # greedy over [no_action, push], pushes_per_day limit 2
    champion = service.champions[("hyperlift_uplift", "champion")]
    user = next(
        u for u in consented(served_world)
        if (uplift := dict(zip(champion.model.treatments, champion.model.uplift(
            champion.features.read(service.pseudonymizer(u), champion.model.feature_names).values[None, :])[0])))[PUSH]
        > champion.model.action_costs[PUSH]
    )
    ukey = user_key(user, service.salt)
    steps = service._decision(DecisionRequest(user_id=user, surface="push"))
    pipe, raise_on_error = next(steps)  # the read: caps not full, push allowed
    value = steps.send(pipe.execute(raise_on_error))
    assert surface.caps.reserve(ukey, PUSH, "concurrent-1") and surface.caps.reserve(ukey, PUSH, "concurrent-2")
    while True:
        pipe, raise_on_error = value
        try:
            value = steps.send(pipe.execute(raise_on_error))
        except StopIteration as done:
            response = done.value
            break
    assert [a.action_id for a in response.actions] == ["no_action"] and response.fallback is None
    assert response.redrawn  # the client is told its propensity is no logging probability
    assert service.metrics.total("hyperlift_decision_redraws_total", surface="push") == 1
    assert service.metrics.total("hyperlift_cap_refusals_total", surface="push") == 1
    service.trace.flush()
    (record,) = last_records(serving_settings, 1)
    assert record["decision_id"] == response.decision_id and record["redraws"] == 1
    # the redraw's pool: its probability 1 is conditional on the refusal, not a propensity
    assert record["candidates"] == ["no_action"] and record["chosen_probabilities"] == [1.0]
    drained = pd.DataFrame([{**record, "features": json.dumps(record["features"]), "revenue": 0.0, "converted": 0}])
    assert logged_rows(drained, champion.model.feature_names).excluded == {"redrawn": 1}
    with pytest.raises(ValueError, match=r"round 0: served after 1 reservation redraw"):
        bandit_feedback_from_decisions([record], ACTIONS)
    service.trace.close()
    clear_counters(serving_settings.redis_url)
