"""The decision log under Redis faults, with the service answering steady concurrent decisions: Redis paused,
Redis killed and restarted on the same port, and a graceful restart of the service while Redis is paused — every
decision served is in the drained lake exactly once, and nothing is dropped.

(A SIGKILL of the service, the disk budget and damaged files: tests/serving/store/test_trace.py; safe mode across a
Redis restart: tests/serving/ops/test_safe_mode.py. The same faults, with figures: bench/decision_log_faults.py.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import pytest
import redis
from fastapi.testclient import TestClient

from infra.redis_server import EmbeddedRedis
from infra.settings import HyperliftSettings
from serving.core.config import ServingSettings
from serving.main import create_app
from serving.store.decision_log import DECISION_FORMAT, DRAIN_GROUP, StreamDrain, read_partitions
from serving.store.reconcile import reconcile
from tests.feature_repo.factories import materialize_shop
from tests.serving.conftest import SHOP, register_model, write_policy_dir


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A shop materialized into a persistent (append-only) redis-server this module owns, and a champion."""
    root = tmp_path_factory.mktemp("faults")
    home = root / "hyperlift"
    settings = HyperliftSettings(home=home, reports_dir=home / "reports")
    server = EmbeddedRedis(root / "redis", persist=True)
    url = server.start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HYPERLIFT_HOME", str(home))
        try:
            _, _, _, shop = materialize_shop(settings, url, SHOP)
            register_model(settings, "hyperlift_uplift", "uplift_v1")
            yield server, [int(u) for u in shop.users["user_id"]]
        finally:
            server.stop()


@pytest.fixture
def settings(world, tmp_path) -> ServingSettings:
    server, _ = world
    policy = write_policy_dir(tmp_path / "policy")
    return ServingSettings(
        redis_url=server.url, seed=1, config_dir=policy, experiments_file=policy / "experiments.yaml",
        model_refresh_s=0, log_decisions=False, decision_stream=f"faults:{tmp_path.name}",
        decision_wal_dir=tmp_path / "wal", safe_mode_file=tmp_path / "safe_mode.json", decision_log_ack_poll_s=0.1,
        decision_log_close_s=0.5, mode="dev",
    )


class Traffic:
    """Steady concurrent decisions: `clients` threads, each asking, then pausing `pause_s`; the ids answered."""

    def __init__(self, client: TestClient, users: list[int], clients: int = 4, pause_s: float = 0.02):
        self.client, self.users, self.pause_s = client, users, pause_s
        self.served: list[str] = []
        self.failed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(clients)]
        for thread in self._threads:
            thread.start()

    def _run(self, index: int) -> None:
        n = index
        while not self._stop.is_set():
            user = self.users[n % len(self.users)]
            response = self.client.post("/v1/decisions", json={"user_id": user, "surface": "home"})
            with self._lock:
                if response.status_code == 200:
                    self.served.append(response.json()["decision_id"])
                else:
                    self.failed += 1
            n += len(self._threads)
            time.sleep(self.pause_s)

    def stop(self) -> list[str]:
        """Stop asking; the ids of the decisions served."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return self.served


def drained_ids(settings: ServingSettings, lake) -> list[str]:
    client = redis.Redis.from_url(settings.redis_url)
    StreamDrain(client, settings.decision_stream, DRAIN_GROUP, "test", lake, DECISION_FORMAT).drain()
    return read_partitions(lake, record_format=DECISION_FORMAT)["decision_id"].tolist()


def settle(api: TestClient) -> None:
    """Let the trace writer send everything Redis has not confirmed."""
    assert api.app.state.runtime.service.trace.flush(30, wait_for_redis=True)


def test_redis_paused_under_load_loses_no_decision(world, settings, tmp_path):
    server, users = world
    with TestClient(create_app(settings)) as api:
        traffic = Traffic(api, users)
        time.sleep(1.0)
        os.kill(server.pid, signal.SIGSTOP)
        try:
            time.sleep(2.5)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        time.sleep(1.0)
        served = traffic.stop()
        settle(api)
        trace = api.app.state.runtime.service.trace
        assert trace.stats.spilled > 0 and trace.stats.replayed >= trace.stats.spilled  # the pause hit the log
        assert trace.appended == len(served) and trace.dropped == 0
    logged = drained_ids(settings, tmp_path / "lake")
    assert traffic.failed == 0 and sorted(logged) == sorted(served)  # each served decision once, nothing else


def test_redis_killed_and_restarted_under_load_loses_no_decision(world, settings, tmp_path):
    server, users = world
    with TestClient(create_app(settings)) as api:
        traffic = Traffic(api, users)
        time.sleep(1.0)
        server.kill()  # appendfsync everysec: up to a second of confirmed entries is gone with it
        time.sleep(0.5)
        server.start()
        time.sleep(1.0)
        served = traffic.stop()
        settle(api)
        trace = api.app.state.runtime.service.trace
        assert trace.stats.redis_restarts == 1 and trace.dropped == 0 and trace.appended == len(served)
    logged = drained_ids(settings, tmp_path / "lake")
    assert traffic.failed == 0 and sorted(logged) == sorted(served)


def test_a_graceful_restart_while_redis_is_paused_loses_no_decision(world, settings, tmp_path):
    server, users = world
    with TestClient(create_app(settings)) as first:
        traffic = Traffic(first, users)
        time.sleep(1.0)
        os.kill(server.pid, signal.SIGSTOP)
        time.sleep(0.3)
        served = traffic.stop()
        left = first.app.state.runtime.service.trace
    with contextlib.ExitStack() as stack:
        try:  # the first process has stopped; its last records are on disk only
            assert left.unsent_records > 0 and left.dropped == 0
            second = stack.enter_context(TestClient(create_app(settings)))  # starts while Redis is still paused
        finally:
            os.kill(server.pid, signal.SIGCONT)
        traffic = Traffic(second, users)
        time.sleep(1.0)
        served += traffic.stop()
        settle(second)
        trace = second.app.state.runtime.service.trace
        assert trace.stats.replayed >= left.unsent_records and trace.dropped == 0
    logged = drained_ids(settings, tmp_path / "lake")
    assert sorted(logged) == sorted(served)
    books = reconcile(redis.Redis.from_url(settings.redis_url), tmp_path / "lake", settings.decision_stream)
    assert (books.total("served"), books.total("logged"), books.dropped()) == (len(served), len(served), {})
