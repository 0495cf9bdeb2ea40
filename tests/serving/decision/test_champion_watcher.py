"""Alias changes reach a running service without dropping a request."""

import threading
import time

from fastapi.testclient import TestClient

from serving.core.runtime import build_runtime
from serving.main import create_app
from serving.core.schemas import DecisionRequest
from tests.serving.conftest import register_model
from training.lifecycle import promote, rollback

KEY = ("hyperlift_uplift", "champion")


def test_promotion_is_picked_up_and_swapped(serving_settings, served_world):
    settings, _, _ = served_world
    runtime = build_runtime(serving_settings)
    service, watcher = runtime.service, runtime.watcher
    assert service.champions[KEY].ref.version == "1"
    assert watcher.refresh() == 0  # nothing new yet
    version = register_model(settings, "hyperlift_uplift", "uplift_v1", alias="challenger", seed=7)
    assert watcher.refresh() == 0  # a challenger does not serve
    promote(settings.mlflow_uri, "hyperlift_uplift", version)
    try:
        assert watcher.refresh() == 1
        assert service.decide(DecisionRequest(user_id=3, surface="home")).model.version == version
        assert service.metrics.total("hyperlift_model_swaps_total") == 1
    finally:
        rollback(settings.mlflow_uri, "hyperlift_uplift")


def test_requests_in_flight_never_fail_during_swaps(serving_settings, served_world):
    settings, _, _ = served_world
    runtime = build_runtime(serving_settings)
    service, watcher = runtime.service, runtime.watcher
    versions = [register_model(settings, "hyperlift_uplift", "uplift_v1", alias="challenger", seed=s) for s in (11, 12)]
    seen, errors, stop = set(), [], threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                seen.add(service.decide(DecisionRequest(user_id=5, surface="home")).model.version)
            except Exception as exc:  # noqa: BLE001 - the test records any failure to assert there were none
                errors.append(exc)

    workers = [threading.Thread(target=traffic) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        for version in versions:
            promote(settings.mlflow_uri, "hyperlift_uplift", version)
            assert watcher.refresh() == 1
        deadline = time.monotonic() + 10
        while versions[-1] not in seen and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
        for _ in versions:
            rollback(settings.mlflow_uri, "hyperlift_uplift")
    assert errors == []
    assert versions[-1] in seen and service.champions[KEY].ref.version == versions[-1]


def test_a_version_that_cannot_serve_is_counted_and_the_old_one_stays(serving_settings, served_world):
    settings, _, _ = served_world
    runtime = build_runtime(serving_settings)
    service = runtime.service
    before = service.champions[KEY].ref.version
    version = register_model(settings, "hyperlift_uplift", "uplift_v9", alias="challenger", seed=3)
    promote(settings.mlflow_uri, "hyperlift_uplift", version)
    try:
        assert runtime.watcher.refresh() == 0
        assert service.champions[KEY].ref.version == before
        assert service.metrics.total("hyperlift_model_refresh_failures_total") == 1
    finally:
        rollback(settings.mlflow_uri, "hyperlift_uplift")


def test_stats_endpoint_reports_swaps(serving_settings):
    with TestClient(create_app(serving_settings)) as client:
        body = client.get("/v1/stats").json()
    assert body["model_swaps"] == 0 and body["model_refresh_failures"] == 0
