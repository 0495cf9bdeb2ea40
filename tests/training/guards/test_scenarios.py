"""The guards on the simulator (simulator/drift.py): each injected drift alarms within 2,000 decisions, the surface
turns cautious and the recently promoted champion is rolled back in a real MLflow registry, all audited; 20
stationary seeds of the same length give at most one false alarm (≤ 5 %)."""

import json

import pytest
import redis

from bench.drift_guards import SURFACE, register_versions, run_scenario
from infra.audit import RAW_ID_FIELDS, AuditLog
from training.guards.runner import ACTOR, promotion_time
from training.lifecycle import alias_version, champion_history, promote, rollback, rolled_back_versions

LENGTH, SHIFT = 4000, 2000


@pytest.fixture(scope="module")
def client(redis_databases) -> redis.Redis:
    return redis.Redis.from_url(redis_databases.fresh())


@pytest.mark.parametrize("scenario", ["shifted_population", "broken_feature", "price_shock"])
def test_an_injected_drift_alarms_turns_the_surface_cautious_and_rolls_back(scenario, client, tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERLIFT_AUDIT_DIR", str(tmp_path / "audit"))  # lifecycle's entries land here too
    audit = AuditLog(tmp_path / "audit")
    uri, model = f"sqlite:///{tmp_path / 'mlflow.db'}", "hyperlift_uplift"
    register_versions(uri, model, 2)
    promote(uri, model, "1", "test", "first champion")
    result = run_scenario(
        scenario, 0, client, audit, length=LENGTH, shift=SHIFT, model=model,
        promote=lambda: promote(uri, model, "2", "test", "new champion"),
        previous_champion=lambda: (champion_history(uri, model) or [None])[-1],
        promoted_at=promotion_time(audit, model),
        roll_back=lambda actor, reason: rollback(uri, model, actor, reason),
    )
    assert result.alarm_at is not None and 0 < result.alarm_at <= 2000, result.alarm_at
    record = json.loads(client.hget(f"hyperlift:cautious:{scenario}:0", SURFACE))
    assert result.cautious and record["enabled"] and record["actor"] == ACTOR
    assert alias_version(uri, model, "champion") == "1" and rolled_back_versions(uri, model) == ["2"]
    metrics = result.runner.metrics
    assert metrics.value("hyperlift_guard_cautious_entries_total") == 1
    assert metrics.value("hyperlift_guard_rollbacks_total", model=model) == 1
    guard = audit.entries(actor=ACTOR)
    assert [e["action"] for e in guard][:2] == ["guard.alarm", "guard.cautious_on"]
    back = [e for e in guard if e["action"] == "model.rollback"]
    assert len(back) == 1 and back[0]["target"] == f"{model}@1" and back[0]["details"]["previous"] == "2"
    assert "below the previous champion's interval" in back[0]["reason"]
    for entry in audit.entries():  # never a user: surfaces and model versions only
        assert not RAW_ID_FIELDS & set(entry["details"]) and "user" not in entry["target"]


def test_twenty_stationary_seeds_give_at_most_one_false_alarm(client, tmp_path):
    audit = AuditLog(tmp_path / "audit")
    runs = [run_scenario("stationary", seed, client, audit, length=LENGTH, shift=SHIFT) for seed in range(20)]
    alarmed = [r.seed for r in runs if r.alarm_at is not None]
    assert len(alarmed) / len(runs) <= 0.05, alarmed
    assert sum(len(r.runner.looks) for r in runs) == 20 * 16  # every run was tested at every look (250 … 4000)
    assert not [r for r in runs if r.rolled_back and r.alarm_at is None]  # no rollback without an alarm
