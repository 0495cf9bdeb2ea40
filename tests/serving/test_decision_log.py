import pandas as pd
import redis

from serving.decision_log import DecisionLog, drain_to_parquet


def test_append_then_drain_keeps_every_record_in_order(online_redis_url, tmp_path):
    client = redis.Redis.from_url(online_redis_url)
    log = DecisionLog(client, "decisions", maxlen=100_000)
    for i in range(2503):
        assert log.append({"decision_id": f"d{i}", "propensity": 0.5, "action_id": "a"})
    n = drain_to_parquet(client, "decisions", tmp_path / "log.parquet", batch=1000)
    frame = pd.read_parquet(tmp_path / "log.parquet")
    assert n == len(frame) == 2503
    assert list(frame["decision_id"][:3]) == ["d0", "d1", "d2"] and frame["decision_id"].is_unique
    assert log.failures == 0


def test_fallback_decisions_without_features_drain_to_parquet(online_redis_url, tmp_path):
    import numpy as np

    from serving.schemas import DecisionRequest
    from serving.service import NO_MODEL, DecisionService

    client = redis.Redis.from_url(online_redis_url)
    service = DecisionService(None, DecisionLog(client, "d", 1000), 0.1, "no_action", np.random.default_rng(0))
    for user in range(3):
        service.decide(DecisionRequest(user_id=user, surface="home", context={}))
    frame = pd.read_parquet(tmp_path / "log.parquet") if drain_to_parquet(client, "d", tmp_path / "log.parquet") else None
    assert frame is not None and list(frame["fallback"]) == [NO_MODEL] * 3
    assert frame["features"].isna().all() and frame["context"].isna().all()
