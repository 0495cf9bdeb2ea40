"""The drift_guards asset on the real path: simulated decision records in the Redis stream, drained to the lake,
guarded per surface; a broken feature alarms, turns the surface cautious and rolls the new champion back. The
sensor asks for a run every `step` new decisions."""

import datetime as dt
import json
import re

import dagster as dg
import redis

from bench.drift_guards import COSTS, register_versions
from dagster_project.assets.decisions import decision_trace, outcome_events
from dagster_project.assets.guards import drift_guards
from dagster_project.guard_sensors import drift_guards_sensor
from dagster_project.resources import DataLakeResource, MlflowResource, RedisResource
from infra.audit import AuditLog
from serving.ops.cautious import CAUTIOUS_KEY
from serving.store.decision_log import DECISION_STREAM, OUTCOME_STREAM
from simulator.drift import T0, DriftStream
from training.lifecycle import alias_version, promote

MODEL = "hyperlift_uplift"


def test_a_broken_feature_in_the_lake_alarms_switches_cautious_and_rolls_back(redis_databases, settings, monkeypatch):
    monkeypatch.setenv("HYPERLIFT_AUDIT_DIR", str(settings.home / "audit"))
    url = redis_databases.fresh()
    client = redis.Redis.from_url(url)
    uri = settings.mlflow_uri
    register_versions(uri, MODEL, 2)
    promote(uri, MODEL, "1", "test", "first champion")
    promote(uri, MODEL, "2", "test", "new champion")  # just now: recent
    stream = DriftStream("broken_feature", seed=3, shift=1500)
    records = stream.records(stream.next(1500), model_version="1") + stream.records(stream.next(1500), model_version="2")
    for r in records:
        cost = COSTS[r["chosen"][0]]
        client.xadd(DECISION_STREAM, {"record": json.dumps({**r, "value": None, "user_key": f"k{r['decision_id']}"})})
        if r["value"] + cost > 0:
            client.xadd(OUTCOME_STREAM, {"record": json.dumps({
                "outcome_id": f"o{r['decision_id']}", "ts": r["ts"] + 60, "user_key": f"k{r['decision_id']}",
                "decision_id": r["decision_id"], "kind": "purchase", "revenue": r["value"] + cost})})
    lake = DataLakeResource(root=str(settings.data_dir))
    resources = {"lake": lake, "redis": RedisResource(url=url),
                 "mlflow": MlflowResource(tracking_uri=uri, artifact_dir=str(settings.home / "artifacts"))}
    assert dg.materialize([decision_trace, outcome_events], resources=resources).success

    sensor = drift_guards_sensor(dg.build_sensor_context(resources={"lake": lake}))
    assert isinstance(sensor, dg.RunRequest) and sensor.tags["decisions"] == "3000"

    now = dt.datetime.fromtimestamp(T0 + 3000 + 4 * 86400, dt.UTC).isoformat()
    result = dg.materialize([drift_guards], resources=resources,
                            run_config={"ops": {"drift_guards": {"config": {"now": now, "reference_size": 1500,
                                                                               "action_costs": COSTS}}}})
    metadata = result.asset_materializations_for_node("drift_guards")[0].metadata
    assert "avg_order_value" in metadata["home/alarms"].value
    assert "below the previous champion's interval" in metadata["home/rollback_verdict"].value
    assert metadata["home/cautious"].value is True and metadata["home/rolled_back"].value == "['2']"
    assert re.search(r"\| avg_order_value +\| +500 \|.*\| True +\|", metadata["home/psi_table"].value)
    assert metadata["guard_rollbacks"].value == 1
    assert json.loads(client.hget(CAUTIOUS_KEY, "home"))["enabled"] is True
    assert alias_version(uri, MODEL, "champion") == "1"
    assert [e["action"] for e in AuditLog(settings.home / "audit").entries(actor="guard:drift")][-1] == "model.rollback"
    assert (settings.data_dir / "guards" / "home-2.json").exists()  # the reference, saved for the next runs
