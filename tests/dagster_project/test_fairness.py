"""The fair_exposure asset on the real path: decision records in the Redis stream, drained to the lake, exposure by
region judged against the rules; a disparity is audited, and with `enforce` the caps land where serving polls them."""

import json

import dagster as dg
import redis

from dagster_project.assets.decisions import decision_trace
from dagster_project.assets.fairness import fair_exposure
from dagster_project.resources import DataLakeResource, RedisResource
from infra.audit import AuditLog
from serving.ops.parity import PARITY_KEY
from serving.store.decision_log import DECISION_STREAM
from simulator.drift import DriftStream

NORTH = 0.0  # region_code of north (feature_repo.transforms.REGIONS)


def test_a_region_shown_twice_the_promotions_of_the_others_is_audited_and_capped(redis_databases, settings,
                                                                                   monkeypatch, tmp_path):
    monkeypatch.setenv("HYPERLIFT_AUDIT_DIR", str(tmp_path / "audit"))
    url = redis_databases.fresh()
    client = redis.Redis.from_url(url)
    stream = DriftStream("stationary", seed=5, shift=10_000)
    records = stream.records(stream.next(3000))
    promoted = {"north": 0, "other": 0}
    for i, r in enumerate(records):  # north: every other decision a promotion; elsewhere one in four
        north = r["features"]["user_profile_fv"]["values"].get("region_code") == NORTH
        promote = i % 2 == 0 if north else i % 4 == 0
        r["chosen"] = ["pct10_sitewide" if promote else "no_action"]
        r["fallback"] = None
        promoted["north" if north else "other"] += promote
        client.xadd(DECISION_STREAM, {"record": json.dumps({**r, "value": None, "user_key": f"k{r['decision_id']}"})})
    lake = DataLakeResource(root=str(settings.data_dir))
    resources = {"lake": lake, "redis": RedisResource(url=url)}
    assert dg.materialize([decision_trace], resources=resources).success

    rules = tmp_path / "fairness.yaml"
    rules.write_text("enforce: true\nrules: [{dimension: region, min_ratio: 0.8, min_decisions: 100}]\n")
    result = dg.materialize([fair_exposure], resources=resources,
                            run_config={"ops": {"fair_exposure": {"config": {"fairness_file": str(rules)}}}})
    metadata = result.asset_materializations_for_node("fair_exposure")[0].metadata
    assert metadata["breaches"].value == 1 and metadata["enforced"].value is True
    caps = metadata["caps_in_force"].value
    assert set(caps) == {"home|region|north"} and 0.4 < caps["home|region|north"] < 0.65  # ~0.25/0.8 / 0.5
    assert {k.decode(): float(v) for k, v in client.hgetall(PARITY_KEY).items()} == caps  # where serving polls
    assert metadata["exposure"].value.startswith("![exposure](data:image/png;base64,")
    actions = [(e["action"], e["target"]) for e in AuditLog(tmp_path / "audit").entries()]
    assert ("parity.alarm", "home/region") in actions and ("parity.caps", "fair exposure") in actions

    rules.write_text("enforce: false\nrules: [{dimension: region, min_ratio: 0.8, min_decisions: 100}]\n")
    again = dg.materialize([fair_exposure], resources=resources,
                           run_config={"ops": {"fair_exposure": {"config": {"fairness_file": str(rules)}}}})
    assert again.asset_materializations_for_node("fair_exposure")[0].metadata["caps_in_force"].value == {}
    assert client.hgetall(PARITY_KEY)  # reporting only: caps a person or an enforcing run put there stay
