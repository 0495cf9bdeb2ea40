"""The demo's decision-log stage (demo.readout): the shop's purchases after the served decisions, and the drain plus
decision_outcomes and experiment_readout materialized for every served day on the demo's Dagster instance."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import dagster as dg
import numpy as np
import pytest
import redis

from dagster_project.definitions import build_definitions
from dagster_project.partitions import DECISION_DAYS
from dagster_project.resources import build_resources
from demo.readout import clear_days, read_out_days, sampled_outcomes, served_days, window_end
from demo.traffic import Served
from serving.store.decision_log import DECISION_STREAM, OUTCOME_STREAM
from simulator import ShopConfig, build_shop
from simulator.actions import ACTION_IDS

DAYS = ["2026-10-31", "2026-11-01"]
SHOP = ShopConfig(n_users=300, n_items=30, n_days=3, seed=3)


def _ts(day: str, hour: float) -> float:
    return datetime.fromisoformat(f"{day}T00:00:00+00:00").timestamp() + hour * 3600.0


def _decision(n: int, day: str, arm: str) -> dict:
    return {
        "decision_id": uuid.UUID(int=n).hex, "ts": _ts(day, 1 + n % 20), "surface": "home", "region": "eu",
        "policy_version": "p1", "user_key": f"{day}-u{n}", "context_hash": "c" * 32,
        "candidates": ["no_action", "push"], "scores": [None, 0.4], "probabilities": [0.2, 0.8], "chosen": ["push"],
        "chosen_probabilities": [0.8], "model_name": "m", "model_version": "1", "feature_service": "uplift_v1",
        "experiments": {"policy_holdout": arm}, "fallback": None, "latency_ms": {"total": 3.0},
    }


def _served(user_ids: list[int], actions: list[str], at: list[float]) -> Served:
    n = len(user_ids)
    return Served(np.array(user_ids), actions, np.full(n, 0.5), [None] * n, np.ones(n), [{}] * n, None, None,
                  [uuid.UUID(int=i + 1).hex for i in range(n)], np.array(at))


@pytest.fixture
def served_log(redis_databases, settings) -> tuple[dg.Definitions, redis.Redis]:
    """Eight decisions on each of two days in the decision stream (arms alternate), and purchases in the outcome
    stream: three of the four policy-arm users buy for 10.0, one holdout user for 2.0, by decision_id."""
    url = redis_databases.fresh()
    client = redis.Redis.from_url(url)
    n = 0
    for day in DAYS:
        for k in range(8):
            n += 1
            record = _decision(n, day, "policy" if k % 2 else "holdout")
            client.xadd(DECISION_STREAM, {"record": json.dumps(record)})
            revenue = 10.0 if k in (1, 3, 5) else 2.0 if k == 0 else 0.0
            if revenue:
                outcome = {"outcome_id": f"o{n}", "ts": record["ts"] + 3600.0, "user_key": record["user_key"],
                           "decision_id": record["decision_id"], "kind": "purchase", "revenue": revenue}
                client.xadd(OUTCOME_STREAM, {"record": json.dumps(outcome)})
    return build_definitions(build_resources(settings, url, SHOP)), client


def test_the_stage_materializes_outcomes_and_readout_for_every_served_day(served_log):
    defs, _ = served_log
    closes = window_end(DAYS, 72.0)
    assert closes == datetime(2026, 11, 5, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        readouts = read_out_days(defs, instance, DAYS, closes)
        assert DECISION_DAYS.get_partition_keys(dynamic_partitions_store=instance) == DAYS
        for asset in ("decision_outcomes", "experiment_readout"):
            records = instance.fetch_materializations(dg.AssetKey(asset), limit=10).records
            assert sorted(r.partition_key for r in records) == DAYS
    assert [(r.day, r.decisions, r.outcomes_joined, r.unmatched, r.status) for r in readouts] == [
        (day, 8, 4, 0, "final") for day in DAYS]
    head = readouts[0].headline
    # policy users 7.5 per user (10, 10, 10, 0), holdout 0.5 (2, 0, 0, 0)
    assert (head["experiment"], head["arm"], head["control_arm"], head["diff"]) == (
        "policy_holdout", "policy", "holdout", 7.0)
    assert head["low"] < 7.0 < head["high"] and (head["n_arm"], head["n_control"]) == (4, 4)
    assert readouts[1].line().startswith(
        "2026-11-01: 8 decisions, 4 outcomes joined (0 unmatched), final; policy_holdout policy − holdout: revenue "
        "per user +7.000 [")


def test_a_day_that_is_not_over_on_the_stage_clock_is_refused(served_log):
    defs, _ = served_log
    with dg.instance_for_test() as instance, pytest.raises(RuntimeError, match=r"\['2026-11-01'\] are not "
                                                             r"decision_days partitions after the drain"):
        read_out_days(defs, instance, DAYS, datetime(2026, 11, 1, 12, tzinfo=UTC))


def test_the_shops_purchases_follow_their_decisions_and_stop_at_the_clock():
    shop = build_shop(SHOP)
    at = [_ts("2026-10-04", h) for h in np.linspace(0, 23, 200)]
    served = _served(list(range(200)) + [10**9], [ACTION_IDS[i % len(ACTION_IDS)] for i in range(201)], at + [at[-1]])
    until = window_end(served_days(served), 72.0)
    outcomes = sampled_outcomes(shop, served, 200, until)  # the cold-start user (not in the shop) is left out
    assert 0 < len(outcomes) < 200
    when = dict(zip(served.decision_ids, served.served_at))
    lag = outcomes["ts"] - outcomes["decision_id"].map(when)
    assert (lag > 0).all() and (outcomes["ts"] <= until.timestamp()).all() and (outcomes["revenue"] > 0).all()
    assert outcomes.equals(sampled_outcomes(shop, served, 200, until))  # the demo's draws repeat
    earlier = sampled_outcomes(shop, served, 200, datetime(2026, 10, 5, tzinfo=UTC))
    assert set(earlier["decision_id"]) < set(outcomes["decision_id"])


def test_earlier_runs_of_the_day_are_cleared_with_their_outcome_days(tmp_path):
    for folder in ("decisions/date=2026-10-31", "decisions/date=2026-10-30", "outcomes/date=2026-11-03",
                   "outcomes/date=2026-11-04"):
        (tmp_path / folder).mkdir(parents=True)
    assert clear_days(tmp_path, ["2026-10-31"], 72.0) == 2
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob("*/date=*")) == [
        "decisions/date=2026-10-30", "outcomes/date=2026-11-04"]
