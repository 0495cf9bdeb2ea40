"""Decisions and outcomes from the running service go through the drain and the join with nothing lost."""

import json

import pytest
import redis
from fastapi.testclient import TestClient

from serving.decision_log import DECISION_FORMAT, OUTCOME_FORMAT, StreamDrain, read_partitions
from serving.identity import user_key
from serving.main import create_app
from training.outcome_join import join_outcomes


def test_service_traces_drain_and_join_their_outcomes(serving_settings, served_world, tmp_path):
    users = [int(u) for u in served_world[2]["user_id"].iloc[:6]]
    client = redis.Redis.from_url(serving_settings.redis_url)
    with TestClient(create_app(serving_settings)) as api:
        decisions = [api.post("/v1/decisions", json={"user_id": u, "surface": "cart"}).json() for u in users]
        by_decision = api.post("/v1/outcomes", json={"decision_id": decisions[0]["decision_id"], "revenue": 30.0})
        by_user = api.post("/v1/outcomes", json={"user_id": users[1], "revenue": 12.5})
        assert by_decision.status_code == by_user.status_code == 202
        api.app.state.runtime.service.trace.flush()
    drained = {}
    for stream, fmt, name in ((serving_settings.decision_stream, DECISION_FORMAT, "decisions"),
                              (serving_settings.outcome_stream, OUTCOME_FORMAT, "outcomes")):
        StreamDrain(client, stream, "lake-test", "c1", tmp_path / name, fmt).drain()
        drained[name] = read_partitions(tmp_path / name, record_format=fmt)
    ours = drained["decisions"].loc[drained["decisions"]["decision_id"].isin([d["decision_id"] for d in decisions])]
    assert len(ours) == len(decisions)  # every decision traced once
    first = ours.set_index("decision_id").loc[decisions[0]["decision_id"]]
    assert list(first["chosen"]) == [a["action_id"] for a in decisions[0]["actions"]]
    assert first["user_key"] == user_key(users[0], serving_settings.hash_salt)
    assert json.loads(first["experiments"]) == decisions[0]["experiments"]
    joined = join_outcomes(ours, drained["outcomes"]).decisions.set_index("decision_id")
    assert joined.loc[decisions[0]["decision_id"], "revenue"] == pytest.approx(30.0)
    assert joined.loc[decisions[1]["decision_id"], "revenue"] == pytest.approx(12.5)  # last touch by user
    assert joined["converted"].sum() == 2 and joined["n_outcomes"].sum() == 2
