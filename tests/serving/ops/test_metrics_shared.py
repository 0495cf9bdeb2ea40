"""One scrape for every worker (serving/ops/metrics_shared.py): counters and histograms summed across the workers'
published expositions, gauges kept per worker, files of dead workers dropped, and a real two-worker uvicorn."""

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from infra.redis_server import free_port
from serving.ops.metrics_shared import SharedExposition, merge_expositions
from tests.serving.conftest import write_policy_dir


def worker_registry(decisions: int, latencies: list[float], in_flight: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("hyperlift_decisions", "Decisions answered.", ["surface"], registry=registry).labels("home").inc(decisions)
    histogram = Histogram("hyperlift_latency_seconds", "Latency.", buckets=(0.001, 0.01), registry=registry)
    for x in latencies:
        histogram.observe(x)
    Gauge("hyperlift_in_flight", "Decisions being computed.", registry=registry).set(in_flight)
    return registry


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_counters_and_histograms_are_summed_gauges_kept_per_worker(tmp_path):
    alive = {101, 202}
    first = SharedExposition(tmp_path, worker_registry(3, [0.0005, 0.005], 1), pid=101, alive=alive.__contains__)
    second = SharedExposition(tmp_path, worker_registry(4, [0.02], 2), pid=202, alive=alive.__contains__)
    second.publish()
    merged = samples(first.scrape().decode())
    assert merged[("hyperlift_decisions_total", (("surface", "home"),))] == 7
    assert [merged[("hyperlift_latency_seconds_bucket", (("le", le),))] for le in ("0.001", "0.01", "+Inf")] == [1, 2, 3]
    assert merged[("hyperlift_latency_seconds_count", ())] == 3
    assert merged[("hyperlift_latency_seconds_sum", ())] == pytest.approx(0.0255)
    assert merged[("hyperlift_in_flight", (("worker", "101"),))] == 1
    assert merged[("hyperlift_in_flight", (("worker", "202"),))] == 2
    assert not any(name == "hyperlift_in_flight" and labels == () for name, labels in merged)


def test_a_scrape_is_current_for_its_worker_and_drops_dead_workers_files(tmp_path):
    alive = {101, 202}
    registry = worker_registry(3, [], 0)
    first = SharedExposition(tmp_path, registry, pid=101, alive=alive.__contains__)
    SharedExposition(tmp_path, worker_registry(4, [], 0), pid=202, alive=alive.__contains__).publish()
    first.publish()
    Counter("hyperlift_extra", "Late.", registry=registry).inc(5)
    assert samples(first.scrape().decode())[("hyperlift_extra_total", ())] == 5  # published at the scrape itself
    alive.discard(202)
    merged = samples(first.scrape().decode())
    assert merged[("hyperlift_decisions_total", (("surface", "home"),))] == 3  # 202's counters left with it
    assert not (tmp_path / "202.prom").exists() and (tmp_path / "101.prom").exists()


def test_stop_removes_the_workers_file_and_publishing_refreshes_state_gauges(tmp_path):
    registry = CollectorRegistry()
    gauge = Gauge("hyperlift_safe_mode", "Safe mode.", registry=registry)
    shared = SharedExposition(tmp_path, registry, interval_s=0.05, pid=101, refresh=lambda: gauge.set(1))
    shared.start()
    time.sleep(0.2)
    assert "hyperlift_safe_mode 1.0" in (tmp_path / "101.prom").read_text()
    shared.stop()
    assert not (tmp_path / "101.prom").exists()
    with pytest.raises(ValueError, match="interval_s must be > 0"):
        SharedExposition(tmp_path, registry, interval_s=0)


def test_merging_nothing_gives_an_empty_exposition():
    assert merge_expositions({}) == []


def test_two_uvicorn_workers_answer_one_scrape_with_every_decision(served_world, tmp_path):
    settings, redis_url, users = served_world
    policy = write_policy_dir(tmp_path / "policy")
    port = free_port()
    env = {
        **os.environ, **settings.environment(redis_url),
        "HYPERLIFT_SERVING_CONFIG_DIR": str(policy), "HYPERLIFT_SERVING_EXPERIMENTS_FILE": str(policy / "experiments.yaml"),
        "HYPERLIFT_SERVING_MODE": "dev", "HYPERLIFT_SERVING_LOG_DECISIONS": "false", "HYPERLIFT_SERVING_MODEL_REFRESH_S": "0",
        "HYPERLIFT_SERVING_METRICS_DIR": str(tmp_path / "metrics"), "HYPERLIFT_SERVING_METRICS_PUBLISH_S": "0.2",
        "HYPERLIFT_SERVING_DECISION_WAL_DIR": str(tmp_path / "wal"),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "serving.main:app", "--port", str(port), "--workers", "2",
         "--log-level", "warning"], env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, "uvicorn exited"
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200 and \
                        len(list((tmp_path / "metrics").glob("*.prom"))) == 2:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "two workers did not start within 120 s"
            time.sleep(0.5)
        ids = [int(u) for u in users["user_id"].to_numpy()[:80]]

        def decide(user: int) -> int:  # a new connection each: the kernel spreads them over both workers
            return httpx.post(f"{base}/v1/decisions", json={"user_id": user, "surface": "home"}, timeout=30).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(decide, ids))
        assert statuses == [200] * len(ids)
        time.sleep(1.0)  # > the publish interval: the sibling's file holds its last decision
        merged = samples(httpx.get(f"{base}/metrics", timeout=10).text)
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert merged[("hyperlift_decisions_total", (("surface", "home"),))] == len(ids)
    workers = {dict(labels)["worker"] for name, labels in merged if name == "process_start_time_seconds"}
    assert len(workers) == 2
