"""The retrain trigger: outcomes drained since the newest model's data cut-off, against a threshold."""

import json

import dagster as dg
import numpy as np
import pytest
import redis

from dagster_project import sensors
from dagster_project.resources import DataLakeResource, MlflowResource, RedisResource
from dagster_project.sensors import retrain_sensor
from serving.store.decision_log import DRAIN_GROUP, OUTCOME_FORMAT, OUTCOME_STREAM, StreamDrain
from training.retrain import retrain_due

T0 = 1_793_491_200.0  # 2026-11-01T00:00:00Z


def test_retrain_is_due_once_enough_outcomes_arrived_after_the_cutoff():
    ts = np.array([T0, T0 + 10, T0 + 20, T0 + 30])
    assert retrain_due(ts, None, 4) == (True, 4)  # no model trained on the log yet: every outcome is new
    assert retrain_due(ts, T0 + 10, 2) == (True, 2)  # strictly after the cut-off
    assert retrain_due(ts, T0 + 10, 3) == (False, 2)
    assert retrain_due(np.array([]), None, 1) == (False, 0)
    with pytest.raises(ValueError, match="min_new_outcomes must be >= 1"):
        retrain_due(ts, None, 0)


def test_the_sensor_asks_for_a_retrain_when_the_lake_holds_enough_new_outcomes(
    redis_databases, settings, monkeypatch
):
    url = redis_databases.fresh()
    client = redis.Redis.from_url(url)
    for i in range(3):
        record = {"outcome_id": f"o{i}", "ts": T0 + i, "user_key": "u", "decision_id": None, "kind": "purchase",
                  "revenue": 5.0}
        client.xadd(OUTCOME_STREAM, {"record": json.dumps(record)})
    lake = DataLakeResource(root=str(settings.data_dir))
    StreamDrain(client, OUTCOME_STREAM, DRAIN_GROUP, "t", lake.path("outcomes"), OUTCOME_FORMAT).drain()
    resources = {"lake": lake, "mlflow": MlflowResource(tracking_uri=settings.mlflow_uri,
                                                          artifact_dir=str(settings.mlflow_artifacts_dir)),
                 "redis": RedisResource(url=url)}
    monkeypatch.setattr(sensors, "RETRAIN_MIN_OUTCOMES", 4)
    with dg.instance_for_test() as instance:
        skipped = retrain_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert isinstance(skipped, dg.SkipReason) and skipped.skip_message.startswith("3 new outcomes")
        monkeypatch.setattr(sensors, "RETRAIN_MIN_OUTCOMES", 3)
        request = retrain_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert isinstance(request, dg.RunRequest) and request.tags == {"new_outcomes": "3"}
