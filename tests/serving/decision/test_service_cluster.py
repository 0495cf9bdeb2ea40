"""The decision service on a real Redis Cluster, over HTTP: the same decisions as on one server (features, caps,
budgets), every decision in the log, and a master killed under load — no 5xx, the fallbacks counted, nothing lost
from the decision log."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from infra.redis_cluster import redis_client
from infra.redis_cluster_server import LocalRedisCluster
from serving.core.config import ServingSettings
from serving.core.schemas import DecisionRequest
from serving.decision.identity import user_key
from serving.main import create_app
from serving.policy.budgets import MICROS
from feature_repo.stream import QUARANTINE_STREAM, seen_key
from serving.store.decision_log import (
    DECISION_FORMAT, DECISION_STREAM, DRAIN_GROUP, OUTCOME_STREAM, StreamDrain, read_partitions,
)
from serving.store.outcomes import claim_key
from serving.store.redis_cluster_async import AsyncRedisCluster
from serving.store.wal_acks import acks_key, writers_key
from tests.feature_repo.factories import materialize_shop
from tests.infra.redis_cluster import shared_cluster
from tests.lake_ids import lake_id
from tests.serving.conftest import SHOP, write_policy_dir

pytestmark = pytest.mark.redis_cluster

PUSH_COST_MICROS = 20_000  # the push surface's campaign pays 0.02 per push_reminder (tests/serving/conftest.py)


@pytest.fixture(scope="module")
def cluster_world(served_world, request):
    """The served world's shop (same home, registry and champion) materialized into the shared cluster too:
    (platform settings, standalone url, cluster, users)."""
    settings, redis_url, users = served_world
    cluster = shared_cluster(request)
    cluster.flush()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HYPERLIFT_HOME", str(settings.home))
        materialize_shop(settings, cluster.url, SHOP)
    return settings, redis_url, cluster, [int(u) for u in users["user_id"]]


def serving(url: str, tmp_path, name: str, **overrides) -> ServingSettings:
    policy = write_policy_dir(tmp_path / f"policy-{name}")
    return ServingSettings(**{
        "redis_url": url, "seed": 3, "config_dir": policy, "experiments_file": policy / "experiments.yaml",
        "model_refresh_s": 0, "log_decisions": False, "mode": "dev", "decision_wal_dir": tmp_path / f"wal-{name}",
        "safe_mode_file": tmp_path / f"safe-{name}.json", "decision_log_ack_poll_s": 0.1, "decision_log_close_s": 0.5,
        **overrides,
    })


def ask(api: TestClient, requests: list[dict]) -> list[dict]:
    out = []
    for body in requests:
        response = api.post("/v1/decisions", json=body)
        assert response.status_code == 200, response.text
        out.append(response.json())
    return out


def fallbacks(api: TestClient) -> Counter:
    """hyperlift_fallbacks_total by reason, as /metrics exports it."""
    registry = api.app.state.runtime.service.metrics.registry
    counts: Counter = Counter()
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == "hyperlift_fallbacks_total":
                counts[sample.labels["reason"]] += int(sample.value)
    return counts


def test_the_cluster_serves_the_decisions_one_server_serves(cluster_world, monkeypatch, tmp_path):
    settings, single_url, cluster, users = cluster_world
    monkeypatch.setenv("HYPERLIFT_HOME", str(settings.home))
    requests = [{"user_id": u, "surface": s} for u in users[:40] for s in ("home", "cart", "push")]
    answers = {}
    for name, url in (("single", single_url), ("cluster", cluster.url)):
        with TestClient(create_app(serving(url, tmp_path, name))) as api:
            assert isinstance(api.app.state.runtime.service.async_client, AsyncRedisCluster) == (name == "cluster")
            answers[name] = [{k: r[k] for k in ("actions", "slate_propensity", "model", "fallback")}
                             for r in ask(api, requests)]
            # the synchronous path (RoundTrip on the sync client: a RedisCluster here) decides without a fallback too
            service = api.app.state.runtime.service
            sync = [service.decide(DecisionRequest(user_id=u, surface="push")).fallback for u in users[:10]]
            assert sync == [None] * 10
    assert answers["cluster"] == answers["single"]
    assert all(a["fallback"] is None for a in answers["cluster"])
    assert sum(a["actions"][0]["action_id"] == "push_reminder" for a in answers["cluster"]) > 5  # budgets were charged


def test_caps_budgets_and_the_decision_log_on_the_cluster(cluster_world, monkeypatch, tmp_path):
    settings, _, cluster, users = cluster_world
    monkeypatch.setenv("HYPERLIFT_HOME", str(settings.home))
    cluster.flush()  # only the features are needed again: the counters and the stream start empty
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HYPERLIFT_HOME", str(settings.home))
        materialize_shop(settings, cluster.url, SHOP)
    config = serving(cluster.url, tmp_path, "log")
    with TestClient(create_app(config)) as api:
        service = api.app.state.runtime.service
        pushes = {}
        for user in users[:60]:
            shown = [r["actions"][0]["action_id"] for r in ask(api, [{"user_id": user, "surface": "push"}] * 3)]
            pushes[user] = shown.count("push_reminder")
            assert shown.count("push_reminder") <= 2  # pushes_per_day: at most 2 per user
        pushed = [u for u, n in pushes.items() if n]
        assert len(pushed) > 5 and all(pushes[u] == 2 for u in pushed)  # greedy: pushed until the cap refused
        served = 180
        assert service.trace.flush(30, wait_for_redis=True)
        salt = service.salt
    client = redis_client(cluster.url)
    # caps: two shows in each pushed user's sorted set, on that user's slot
    for user in pushed:
        assert client.zcard(f"hyperlift:caps:{{{user_key(user, salt)}}}:pushes_per_day") == 2
    # budgets: exactly the shows, in micro-units, on the campaign's key of the (simulated) day
    day = pd.Timestamp(SHOP.end).tz_localize(None).date() if pd.Timestamp(SHOP.end).tzinfo is None else (
        pd.Timestamp(SHOP.end).tz_convert("UTC").date())  # the service's clock: HYPERLIFT_SERVING_NOW = SHOP.end
    budget_key = f"hyperlift:budget:{{push_campaign:{day.isoformat()}}}"
    assert int(client.get(budget_key)) == 2 * len(pushed) * PUSH_COST_MICROS
    assert int(client.get(budget_key)) / MICROS == pytest.approx(0.04 * len(pushed))
    # the decision log: every decision in the stream once, its receipts and counters on the stream's slot
    assert client.xlen(DECISION_STREAM) == served
    stream_master = cluster.master_of(DECISION_STREAM).port
    assert cluster.master_of(acks_key(DECISION_STREAM, DRAIN_GROUP)).port == stream_master
    assert cluster.master_of(writers_key(DECISION_STREAM)).port == stream_master
    lake = tmp_path / "lake"
    StreamDrain(client, DECISION_STREAM, DRAIN_GROUP, "test", lake, DECISION_FORMAT).drain()
    logged = read_partitions(lake, record_format=DECISION_FORMAT)
    assert len(logged) == served and logged["decision_id"].nunique() == served


def test_outcomes_once_per_key_and_refused_events_on_the_cluster(cluster_world, monkeypatch, tmp_path):
    """The two writes that span keys beyond one user: an outcome's idempotency claim with its stream (one slot), and
    an events call's quarantine entries with its users' seen markers (two writes, split by slot)."""
    settings, _, cluster, users = cluster_world
    monkeypatch.setenv("HYPERLIFT_HOME", str(settings.home))
    end = pd.Timestamp(SHOP.end)
    if end.tzinfo is None:
        end = end.tz_localize("UTC")
    user = users[0]
    good = {"event_id": "cl-1", "event_type": "page_view", "event_version": 1,
            "ts": (end - pd.Timedelta(hours=1)).isoformat(), "user_id": user, "session_id": "s-cl", "item_id": 3,
            "category_id": 4, "price": 12.5, "device": "mobile", "region": "south"}
    bad = {**good, "event_id": "cl-2", "price": 9.3e12}
    with TestClient(create_app(serving(cluster.url, tmp_path, "writes"))) as api:
        sent = [api.post("/v1/outcomes", json={"user_id": user, "revenue": 12.5}, headers={"Idempotency-Key": "k-1"})
                for _ in range(2)]
        answered = api.post("/v1/events", json={"events": [good, bad]})
    assert [r.status_code for r in sent] == [202, 200], [r.text for r in sent]  # 200: a duplicate, stored once
    assert [r.json()["duplicate"] for r in sent] == [False, True]
    assert answered.status_code == 202, answered.text
    body = answered.json()
    assert body["accepted"] == 1 and [r["rule"] for r in body["rejected"]] == ["price.range"]
    client = redis_client(cluster.url)
    assert client.xlen(OUTCOME_STREAM) == 1
    assert client.exists(claim_key(OUTCOME_STREAM, sent[0].json()["outcome_id"])) == 1
    assert client.xlen(QUARANTINE_STREAM) == 1
    (_, fields), = client.xrange(QUARANTINE_STREAM)
    assert json.loads(fields[b"record"])["event"]["user_id"] == user  # refused: kept as received, by raw id
    # answered: a resend is a replay; the marker is the user's pseudonym's, never the raw id's
    assert client.get(seen_key(lake_id(settings, user), "cl-1")) == b"1"
    assert client.get(seen_key(user, "cl-1")) is None


class Traffic:
    """Steady concurrent decisions on two surfaces; the ids answered, the fallback of each, and any non-200."""

    def __init__(self, api: TestClient, users: list[int], clients: int = 4, pause_s: float = 0.01):
        self.api, self.users, self.pause_s = api, users, pause_s
        self.served: list[tuple[float, str, str | None]] = []
        self.errors: list[int] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(clients)]
        for thread in self._threads:
            thread.start()

    def _run(self, index: int) -> None:
        n = index
        while not self._stop.is_set():
            body = {"user_id": self.users[n % len(self.users)], "surface": ("home", "push")[n % 2]}
            response = self.api.post("/v1/decisions", json=body)
            with self._lock:
                if response.status_code == 200:
                    answer = response.json()
                    self.served.append((time.monotonic(), answer["decision_id"], answer["fallback"]))
                else:
                    self.errors.append(response.status_code)
            n += len(self._threads)
            time.sleep(self.pause_s)

    def stop(self) -> list[tuple[float, str, str | None]]:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return self.served


def test_a_master_killed_under_load_loses_no_decision(served_world, monkeypatch, tmp_path):
    """SIGKILL of the master that holds the decision stream (and a third of the users' features, caps and
    budgets) while four clients ask: every request is answered 200, the decisions that could not reach Redis
    fall back and are counted, the replica takes over, decisions succeed again, and every decision served is in the
    drained log exactly once."""
    settings, _, users = served_world
    monkeypatch.setenv("HYPERLIFT_HOME", str(settings.home))
    user_ids = [int(u) for u in users["user_id"]]
    with LocalRedisCluster(tmp_path / "cluster") as cluster:
        materialize_shop(settings, cluster.url, SHOP)
        config = serving(cluster.url, tmp_path, "failover", redis_timeout_ms=200)
        with TestClient(create_app(config)) as api:
            traffic = Traffic(api, user_ids)
            time.sleep(1.5)
            killed_at = time.monotonic()
            old, new = cluster.kill_master(DECISION_STREAM)
            settled_at = time.monotonic()
            time.sleep(3.0)
            served = traffic.stop()
            trace = api.app.state.runtime.service.trace
            assert trace.flush(60, wait_for_redis=True)
            counted = fallbacks(api)
            assert trace.dropped == 0 and trace.appended == len(served)
            assert trace.stats.redis_restarts >= 1  # the new master's run_id: it resent what the lake lacks
            assert trace.stats.spilled > 0 and trace.stats.replayed >= trace.stats.spilled  # the WAL carried them
        assert traffic.errors == []  # no 5xx (nor anything else but 200)
        answered = Counter(fallback for _, _, fallback in served if fallback is not None)
        outage = {"feature_store_unavailable", "feature_store_circuit_open", "policy_store_unavailable",
                  "last_known_good_features"}
        assert set(answered) <= outage and sum(answered.values()) > 0  # the kill was felt, as fallbacks ...
        assert counted == answered  # ... each one counted in hyperlift_fallbacks_total
        before = [f for t, _, f in served if t < killed_at]
        after = [f for t, _, f in served if t > settled_at + 1.5]  # the breaker's probe and the slot map caught up
        assert before and before.count(None) == len(before)  # healthy before the kill
        assert after and after.count(None) == len(after)  # and again once the replica took over
        client = redis_client(cluster.url)
        lake = tmp_path / "lake"
        StreamDrain(client, DECISION_STREAM, DRAIN_GROUP, "test", lake, DECISION_FORMAT).drain()
        logged = read_partitions(lake, record_format=DECISION_FORMAT)["decision_id"].tolist()
        assert sorted(logged) == sorted(decision_id for _, decision_id, _ in served)  # each once, nothing else
        assert old != new and cluster.master_of(DECISION_STREAM).port == new
