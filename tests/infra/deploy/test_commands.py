"""Every command of compose.yaml (and so of the Kubernetes manifests: test_static.py checks they are the same) run
for real on the cluster profile, against the test PostgreSQL server and Redis started from the compose file's own
command: the one-shot set-up commands succeed, each service starts and passes its own healthcheck command, and the
decision service answers with the API keys of its secrets and drains its decision log when stopped.
How container paths, hosts and ports are translated to this machine: tests/infra/deploy/stack.py."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import redis
import yaml

from infra.deploy.check import REPO_ROOT
from infra.deploy.make_secrets import make_secrets
from infra.profile import with_database
from infra.settings import HyperliftSettings
from serving.store.wal import destination_dir, leftovers
from simulator import ShopConfig
from tests.feature_repo.factories import materialize_shop
from tests.infra.conftest import POSTGRES_URL, drop_databases
from tests.infra.deploy import stack
from tests.serving.conftest import FEATURES
from training.learners import TLearner
from training.pyfunc import UpliftModel
from training.registry import CHAMPION_ALIAS, log_and_register

pytestmark = pytest.mark.postgres
SHOP = ShopConfig(n_users=60, n_items=20, n_days=3, seed=7)


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    """Secrets written by make_secrets (the Postgres URL pointed at the test server), Redis started from the compose
    command, and this run's databases dropped at the end."""
    prefix = f"hl_deploy_{uuid.uuid4().hex[:10]}"
    root = tmp_path_factory.mktemp("stack")
    machine = stack.Machine(root=root, postgres_url=with_database(POSTGRES_URL, prefix))
    api_secret = make_secrets(machine.secrets_dir, "shop", ["decide", "outcomes"])
    (machine.secrets_dir / "postgres_url").write_text(machine.postgres_url + "\n")
    machine.api_secret = api_secret  # type: ignore[attr-defined]
    redis_server = stack.start(machine, "redis")
    try:
        stack.wait_healthy(machine, redis_server, timeout_s=30)
        yield machine
    finally:
        redis_server.stop()
        drop_databases([f"{prefix}_{store}" for store in ("dagster", "mlflow", "feast")])


@pytest.fixture(scope="module")
def set_up(machine):
    """The one-shot services, in compose's order: create-databases (twice: it is idempotent), then feast-apply."""
    first = stack.run(machine, "create-databases")
    again = stack.run(machine, "create-databases")
    feast = stack.run(machine, "feast-apply")
    return first, again, feast


def shipped_actions() -> list[str]:
    """Every action the shipped surfaces (serving/conf/surfaces) name, the neutral one first."""
    actions = {"push_reminder"}  # home's weekly push cap names it
    for path in (REPO_ROOT / "serving" / "conf" / "surfaces").glob("*.yaml"):
        actions |= set(yaml.safe_load(path.read_text()).get("candidates", {}).get("actions", []))
    return ["no_action", *sorted(actions - {"no_action"})]


def register_champion(settings: HyperliftSettings) -> str:
    """A small champion over uplift_v1 that scores every action of the shipped surfaces; its version."""
    actions = shipped_actions()
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.random((70 * len(actions), len(FEATURES))), columns=FEATURES)
    treatment = np.array(actions)[np.arange(len(X)) % len(actions)]
    learner = TLearner(objective="reg:squarederror", n_estimators=10).fit(X, treatment, rng.random(len(X)))
    model = UpliftModel(learner, FEATURES, {action: 0.0 for action in actions[1:]})
    return log_and_register(
        model=model, tracking_uri=settings.mlflow_uri, experiment="deploy-test",
        artifact_dir=settings.mlflow_artifacts_dir, model_name="hyperlift_uplift", feature_service="uplift_v1",
        params={}, metrics={}, tags={}, input_example=X, alias=CHAMPION_ALIAS,
    ).version


def cluster_settings(machine: stack.Machine) -> HyperliftSettings:
    """The settings a container of the stack resolves (its HYPERLIFT_HOME, profile and stores)."""
    env = machine.environment("decision-service")
    return HyperliftSettings(
        home=Path(env["HYPERLIFT_HOME"]), reports_dir=machine.root / "reports", profile="cluster",
        postgres_url=machine.postgres_url, mlflow_artifacts_root=Path(env["HYPERLIFT_MLFLOW_ARTIFACTS_ROOT"]),
        redis_url=machine.redis_url(),
    )


def test_the_set_up_commands_create_the_databases_once_and_apply_the_registry(machine, set_up):
    first, again, feast = set_up
    database = machine.postgres_url.rsplit("/", 1)[-1]
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"created {database}_dagster, {database}_mlflow, {database}_feast"
    assert (again.returncode, again.stdout.strip()) == (0, "every database exists already")
    assert feast.returncode == 0, feast.stderr[-3000:]
    from feature_repo.store import feature_store

    store = feature_store(machine.redis_url(), cluster_settings(machine))
    assert "uplift_v1" in {service.name for service in store.list_feature_services()}
    if "127.0.0.1:5432" in POSTGRES_URL or "localhost:5432" in POSTGRES_URL:
        postgres_health = stack.run(machine, "postgres", stack.healthcheck_argv("postgres"), timeout_s=30)
        assert postgres_health.returncode == 0, postgres_health.stdout


def test_dagster_code_location_webserver_and_daemon_start_and_pass_their_healthchecks(machine, set_up):
    code = stack.start(machine, "dagster-code")
    started = []
    try:
        stack.wait_healthy(machine, code)
        web = stack.start(machine, "dagster-webserver")
        started.append(web)
        stack.wait_healthy(machine, web)
        # The webserver reached the code location through the shipped workspace file and its variables.
        port = machine.ports[3000]
        query = "{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError { __typename } } } } }"
        entries = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=60).json()[
            "data"]["workspaceOrError"]["locationEntries"]
        assert [(e["name"], e["locationOrLoadError"]["__typename"]) for e in entries] == [
            ("hyperlift", "RepositoryLocation")]
        daemon = stack.start(machine, "dagster-daemon")
        started.append(daemon)
        stack.wait_healthy(machine, daemon, timeout_s=300)
    finally:
        for process in reversed(started):
            process.stop()
        code.stop()


def test_mlflow_server_starts_on_the_cluster_store_and_passes_its_healthcheck(machine, set_up):
    server = stack.start(machine, "mlflow")
    try:
        stack.wait_healthy(machine, server)
        port = machine.ports[5000]
        response = httpx.get(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search",
                             params={"max_results": 10}, timeout=30)
        assert response.status_code == 200, response.text
        assert "Default" in {e["name"] for e in response.json()["experiments"]}
    finally:
        server.stop()


def test_decision_service_serves_with_its_secrets_and_drains_its_log_when_stopped(machine, set_up):
    settings = cluster_settings(machine)
    _, _, _, shop = materialize_shop(settings, machine.redis_url(), SHOP)
    version = register_champion(settings)
    service = stack.start(machine, "decision-service")
    try:
        stack.wait_healthy(machine, service)  # /readyz: the champion loaded from the cluster's MLflow store
        base = f"http://127.0.0.1:{machine.ports[8000]}"
        health = httpx.get(f"{base}/healthz", timeout=10).json()
        assert health["models"]["hyperlift_uplift@champion"]["version"] == version
        assert httpx.post(f"{base}/v1/decisions", json={"user_id": 1, "surface": "home"}, timeout=10).status_code == 401
        headers = {"Authorization": f"Bearer {machine.api_secret}"}
        ids = []
        for user in shop.users["user_id"].to_numpy()[:20]:
            response = httpx.post(f"{base}/v1/decisions", json={"user_id": int(user), "surface": "home"},
                                  headers=headers, timeout=10)
            assert response.status_code == 200, response.text
            ids.append(response.json()["decision_id"])
    finally:
        stopped_at = time.monotonic()
        returncode = service.stop(timeout_s=60)
        took = time.monotonic() - stopped_at
    # SIGTERM right after the last answer: the shutdown wrote the queue to the write-ahead file and sent it.
    # uvicorn re-raises SIGTERM once its shutdown is complete, and infra.launch exits with the child's status, -15
    # as a byte (241); 0 or 143 would do as well: what matters is that the lifespan shutdown ran to its end.
    assert returncode in (0, 128 + 15, 256 - 15), service.output()
    assert "Application shutdown complete." in service.output()
    assert took < 45 - 10, f"stopping took {took:.1f} s: over terminationGracePeriodSeconds minus preStop"
    client = redis.Redis.from_url(machine.redis_url())
    logged = {json.loads(fields[b"record"])["decision_id"] for _, fields in client.xrange("hyperlift:decisions")}
    client.close()
    assert set(ids) <= logged
    # The write-ahead folder stays on the spill volume (the lake has not confirmed the records: no drain ran),
    # closed by the shutdown with every record sent and none lost at exit; the next process would adopt it.
    wal_root = Path(machine.environment("decision-service")["HYPERLIFT_SERVING_DECISION_WAL_DIR"])
    logs = leftovers(destination_dir(wal_root, machine.redis_url(), "hyperlift:decisions"), 8 << 20)
    try:
        assert len(logs) == 1
        assert logs[0].marker == {"sent": logs[0].last, "run_id": logs[0].marker["run_id"], "closed": True}
        assert logs[0].last >= len(ids) and logs[0].unwritten_at_exit() == 0
    finally:
        for log in logs:
            log.close()


def test_the_backup_service_dumps_every_store_of_the_cluster_and_restores_it(machine, set_up):
    from feature_repo.store import feature_store

    settings = cluster_settings(machine)
    services = sorted(s.name for s in feature_store(machine.redis_url(), settings).list_feature_services())
    created = stack.run(machine, "backup")
    assert created.returncode == 0, created.stderr[-3000:]
    folder = Path(machine.translate("/var/lib/hyperlift/backups/latest"))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["profile"] == "cluster"
    database = machine.postgres_url.rsplit("/", 1)[-1]
    assert {name: entry["database"] for name, entry in manifest["stores"].items() if entry["kind"] == "postgres"} == {
        "postgres-dagster": f"{database}_dagster", "postgres-mlflow": f"{database}_mlflow",
        "postgres-feast": f"{database}_feast"}
    assert {"redis", "lake", "mlflow-artifacts", "dagster", "decision-log-spill", "home"} <= set(manifest["stores"])
    verified = stack.run(machine, "backup", [*stack.container_argv("backup")[:-2], "verify", str(folder)])
    assert verified.returncode == 0, verified.stderr[-2000:]
    refused = stack.run(machine, "backup", [*stack.container_argv("backup")[:-2], "restore", str(folder)])
    assert refused.returncode == 2 and "pass --replace" in refused.stderr
    restored = stack.run(machine, "backup", [*stack.container_argv("backup")[:-2], "restore", str(folder), "--replace"])
    assert restored.returncode == 0, restored.stderr[-3000:]
    store = feature_store(machine.redis_url(), settings)
    assert sorted(s.name for s in store.list_feature_services()) == services
