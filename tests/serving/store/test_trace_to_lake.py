"""Decisions and outcomes from the running service go through the drain and the join with nothing lost; the records
log what serving read, so training on them scores exactly as serving did."""

import json
from datetime import timedelta

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from feature_repo.store import feature_store

from serving.store.decision_log import DECISION_FORMAT, OUTCOME_FORMAT, StreamDrain, read_partitions
from serving.decision.identity import user_key
from serving.main import create_app
from tests.lake_ids import lake_id
from tests.serving.conftest import FEATURES, SHOP
from training.learners import TLearner
from training.lifecycle import promote, rollback
from training.logged_training import logged_rows
from training.outcome_join import join_outcomes
from training.pyfunc import UpliftModel
from training.registry import log_and_register


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


def _drain_decisions(serving_settings, tmp_path, name: str):
    client = redis.Redis.from_url(serving_settings.redis_url)
    StreamDrain(client, serving_settings.decision_stream, f"lake-{name}", "c1", tmp_path / name, DECISION_FORMAT).drain()
    return read_partitions(tmp_path / name, record_format=DECISION_FORMAT).set_index("decision_id", drop=False)


def test_a_record_logs_the_features_read_every_slot_and_the_clock(serving_settings, served_world, tmp_path):
    settings, redis_url, users = served_world
    user = int(users.loc[users["consent_marketing"], "user_id"].iloc[0])
    with TestClient(create_app(serving_settings)) as api:
        cart = api.post("/v1/decisions", json={"user_id": user, "surface": "cart"}).json()
        moved = api.post("/v1/admin/clock", json={"now": (SHOP.end + timedelta(hours=6)).isoformat()})
        assert moved.status_code == 200 and moved.json() == {"now": "2026-10-05T06:00:00Z"}
        home = api.post("/v1/decisions", json={"user_id": user, "surface": "home"}).json()
        back = api.post("/v1/admin/clock", json={"now": SHOP.end.isoformat()})
        assert back.status_code == 409 and "only moves forward" in back.json()["detail"]
        api.app.state.runtime.service.trace.flush()
    records = _drain_decisions(serving_settings, tmp_path, "records")
    first, second = records.loc[cart["decision_id"]], records.loc[home["decision_id"]]
    assert first["ts"] == SHOP.end.timestamp() and second["ts"] == SHOP.end.timestamp() + 6 * 3600  # the one clock
    assert first["record_version"] == 2 and first["redraws"] == 0 and list(first["masked_features"]) == []
    chosen = list(first["chosen"])
    assert list(first["positions"]) == list(range(len(chosen))) and len(chosen) >= 1
    slots = [list(s) for s in first["slot_probabilities"]]
    assert slots[0] == list(first["probabilities"]) and len(slots) == len(chosen)
    candidates = list(first["candidates"])
    for j, (action, p) in enumerate(zip(chosen, first["chosen_probabilities"])):
        assert slots[j][candidates.index(action)] == p and sum(slots[j]) == pytest.approx(1.0, abs=1e-12)
        assert all(slots[j][candidates.index(earlier)] == 0.0 for earlier in chosen[:j])
    # The logged values are Feast's online values of this user (stored by pseudonym), view by view, with the rows'
    # event times.
    logged = json.loads(first["features"])
    store = feature_store(redis_url, settings)
    online = store.get_online_features(
        features=store.get_feature_service("uplift_v1"), entity_rows=[{"user_id": lake_id(settings, user)}]
    ).to_dict()
    values = {name: value for view in logged.values() for name, value in view["values"].items()}
    assert set(values) == set(FEATURES) and set(logged) == {"user_activity_fv", "user_profile_fv"}
    for name in FEATURES:
        expected = online[name][0]
        assert values[name] == (None if expected is None else float(expected)), name
    assert logged["user_activity_fv"]["event_ts"] == SHOP.end.isoformat()


def test_a_model_trained_on_logged_rows_scores_them_in_training_exactly_as_serving_did(
    serving_settings, served_world, tmp_path
):
    settings, _, users = served_world
    ids = [int(u) for u in users.loc[users["consent_marketing"], "user_id"]]
    rng = np.random.default_rng(0)
    with TestClient(create_app(serving_settings)) as api:
        runtime = api.app.state.runtime
        served = [api.post("/v1/decisions", json={"user_id": u, "surface": "home"}).json() for u in ids]
        for body in served:  # outcomes for a third of the decisions, so the learner has labels to fit
            if rng.random() < 1 / 3:
                api.post("/v1/outcomes", json={"decision_id": body["decision_id"], "revenue": float(rng.gamma(2, 10))})
        runtime.service.trace.flush()
        drained = _drain_decisions(serving_settings, tmp_path, "first")
        client = redis.Redis.from_url(serving_settings.redis_url)
        StreamDrain(client, serving_settings.outcome_stream, "lake-logged", "c1", tmp_path / "outcomes",
                    OUTCOME_FORMAT).drain()
        outcomes = read_partitions(tmp_path / "outcomes", record_format=OUTCOME_FORMAT)
        ours = drained.loc[[b["decision_id"] for b in served]].reset_index(drop=True)
        rows = logged_rows(join_outcomes(ours, outcomes).decisions, FEATURES)
        assert len(rows) + sum(rows.excluded.values()) == len(served) and len(rows) > 50
        assert set(rows.excluded) <= {"not_randomized"}

        learner = TLearner(objective="reg:squarederror", n_estimators=15, min_rows_per_arm=5).fit(
            rows.X, rows.action, rows.revenue, propensity=rows.propensity
        )
        model = UpliftModel(learner, FEATURES, {"pct10_sitewide": 0.0, "push_reminder": 0.02})
        version = log_and_register(
            model=model, tracking_uri=settings.mlflow_uri, experiment="logged-rows", artifact_dir=settings.mlflow_artifacts_dir,
            model_name="hyperlift_uplift", feature_service="uplift_v1", params={}, metrics={}, tags={},
            input_example=rows.X, alias="challenger",
        ).version
        promote(settings.mlflow_uri, "hyperlift_uplift", version)
        try:
            assert runtime.watcher.refresh() == 1
            again = [api.post("/v1/decisions", json={"user_id": u, "surface": "home"}).json() for u in ids]
            runtime.service.trace.flush()
        finally:
            rollback(settings.mlflow_uri, "hyperlift_uplift")
    second = _drain_decisions(serving_settings, tmp_path, "second").loc[[b["decision_id"] for b in again]]
    assert set(second["model_version"]) == {version}
    scored = logged_rows(second.assign(revenue=0.0, converted=0), FEATURES)
    uplift = model.uplift(scored.X.to_numpy())  # the training side: the learner on the logged rows
    position = {a: j for j, a in enumerate(model.treatments)}
    compared = 0
    for i, (record_id, candidates) in enumerate(zip(scored.decision_id, scored.candidates)):
        logged_scores = list(second.loc[record_id, "scores"])
        for action, logged_score in zip(candidates, logged_scores):
            # serving's score: the model's float32 uplift, in float64, minus the action's cost (Champion.net_uplift)
            expected = 0.0 if action == model.control else float(uplift[i, position[action]]) - model.action_costs[action]
            assert logged_score == expected, (record_id, action)  # bit for bit, not approximately
            compared += 1
    assert compared >= 2 * len(scored)
