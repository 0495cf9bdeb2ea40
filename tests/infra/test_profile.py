"""The backend profile: `local` is exactly the one-machine setup; `cluster` puts Dagster, MLflow and the Feast registry
on a real PostgreSQL server (tests marked `postgres`, each on databases of its own)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import InstigatorType, TickData, TickStatus
from feast.repo_config import RegistryConfig, load_repo_config
from mlflow import MlflowClient

from dagster_project.assets.online_store import feast_registry
from dagster_project.resources import FeastResource
from feature_repo.definitions import build_repo
from feature_repo.store import REPO_PATH, feature_store
from infra.launch import ensure_dagster_home, project_environment
from infra.profile import (
    CLUSTER_DAGSTER_YAML, LOCAL_DAGSTER_YAML, ProfileError, dagster_yaml, main, postgres_databases,
)
from infra.settings import HyperliftSettings
from tests.infra.conftest import query
from training.lifecycle import alias_version, champion_history, promote

# dagster.yaml as infra.launch wrote it before profiles existed (the local profile must not change a byte of it).
TODAYS_DAGSTER_YAML = """# Written by infra.launch: SQLite storage under this folder (the default), no usage telemetry.
telemetry:
  enabled: false
"""


def cluster(tmp_path: Path, **overrides: object) -> HyperliftSettings:
    """Cluster settings with the given URLs (nothing connects)."""
    return HyperliftSettings(home=tmp_path, profile="cluster", **overrides)


def test_local_profile_is_todays_setup(tmp_path, online_redis_url):
    settings = HyperliftSettings(home=tmp_path)
    assert settings.profile == "local"
    assert settings.mlflow_uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert settings.mlflow_artifacts_dir == tmp_path / "mlflow" / "artifacts"
    assert dagster_yaml(settings) == LOCAL_DAGSTER_YAML == TODAYS_DAGSTER_YAML
    env = settings.environment("redis://127.0.0.1:7001/0")
    assert env == {
        "HYPERLIFT_HOME": str(tmp_path),
        "HYPERLIFT_REPORTS_DIR": str(settings.reports_dir),
        "REDIS_URL": "redis://127.0.0.1:7001/0",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}",
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "HYPERLIFT_FEAST_REGISTRY": str(tmp_path / "feast" / "registry.db"),
        "HYPERLIFT_FEAST_REGISTRY_TYPE": "file",  # the one new variable: feature_store.yaml names the type
        "HYPERLIFT_FEAST_REDIS": "127.0.0.1:7001,db=0",
        "HYPERLIFT_FEAST_REDIS_TYPE": "redis",  # redis_cluster for a redis+cluster:// URL
    }
    # The registry Feast builds is the file registry it built from today's `registry: <path>`.
    store = feature_store(online_redis_url, settings)
    assert store.config.registry == RegistryConfig(path=str(tmp_path / "feast" / "registry.db"))
    assert type(store.registry).__name__ == "Registry"


def test_the_profile_is_read_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HYPERLIFT_PROFILE", "cluster")
    monkeypatch.setenv("HYPERLIFT_POSTGRES_URL", "postgresql://hl:pw@db.internal:5433/prod")
    monkeypatch.setenv("HYPERLIFT_MLFLOW_ARTIFACTS_ROOT", "/mnt/shared/mlflow")
    settings = HyperliftSettings(home=tmp_path)
    assert postgres_databases(settings).by_store() == {
        "dagster": "postgresql+psycopg2://hl:pw@db.internal:5433/prod_dagster",
        "mlflow": "postgresql+psycopg2://hl:pw@db.internal:5433/prod_mlflow",
        "feast": "postgresql+psycopg2://hl:pw@db.internal:5433/prod_feast",
    }
    assert settings.mlflow_uri == "postgresql+psycopg2://hl:pw@db.internal:5433/prod_mlflow"
    assert settings.mlflow_artifacts_dir == Path("/mnt/shared/mlflow")
    env = settings.environment("redis://127.0.0.1:7001/0")
    assert env["HYPERLIFT_FEAST_REGISTRY_TYPE"] == "sql"
    assert env["HYPERLIFT_FEAST_REGISTRY"] == env["HYPERLIFT_FEAST_REGISTRY_URL"] == (
        "postgresql+psycopg2://hl:pw@db.internal:5433/prod_feast")
    assert env["HYPERLIFT_DAGSTER_POSTGRES_URL"] == "postgresql+psycopg2://hl:pw@db.internal:5433/prod_dagster"
    assert env["HYPERLIFT_PROFILE"] == "cluster" and env["HYPERLIFT_MLFLOW_ARTIFACTS_ROOT"] == "/mnt/shared/mlflow"
    # A child process given this environment resolves the same stores.
    for name in ("HYPERLIFT_POSTGRES_URL", "HYPERLIFT_MLFLOW_ARTIFACTS_ROOT"):
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    child, parent = HyperliftSettings(), postgres_databases(settings)
    assert (child.mlflow_uri, postgres_databases(child).dagster, postgres_databases(child).feast) == (
        settings.mlflow_uri, parent.dagster, parent.feast)
    # ... and still provisions MLflow's database: the exported MLFLOW_TRACKING_URI is the derived one, not the user's
    assert postgres_databases(child).by_store() == parent.by_store()


def test_each_store_can_have_its_own_server(tmp_path):
    settings = cluster(
        tmp_path, postgres_url="postgres://hl@db/base", dagster_postgres_url="postgresql://d@dagster-db/runs",
        feast_registry_url="postgresql+psycopg2://f@feast-db/registry", MLFLOW_TRACKING_URI="http://mlflow:5000",
    )
    assert postgres_databases(settings).by_store() == {  # MLflow behind its own server is not ours to provision
        "dagster": "postgresql+psycopg2://d@dagster-db/runs",
        "feast": "postgresql+psycopg2://f@feast-db/registry",
    }
    assert settings.mlflow_uri == "http://mlflow:5000"
    assert postgres_databases(cluster(tmp_path, postgres_url="postgresql://hl@db:5432")).dagster == (
        "postgresql+psycopg2://hl@db:5432/hyperlift_dagster")


def test_cluster_without_a_server_says_what_to_set(tmp_path, capsys, monkeypatch):
    with pytest.raises(ProfileError, match="HYPERLIFT_PROFILE=cluster keeps the dagster store in PostgreSQL: set "
                                           "HYPERLIFT_POSTGRES_URL"):
        cluster(tmp_path).environment("redis://127.0.0.1:7001/0")
    with pytest.raises(ProfileError, match="is not a PostgreSQL URL") as refused:
        cluster(tmp_path, postgres_url="mysql://hl:hunter2@db/x").mlflow_uri
    assert "hunter2" not in str(refused.value) and "mysql://hl:***@db/x" in str(refused.value)
    monkeypatch.setenv("HYPERLIFT_PROFILE", "cluster")
    monkeypatch.setenv("HYPERLIFT_HOME", str(tmp_path))
    assert main(["show"]) == 2
    assert "set HYPERLIFT_POSTGRES_URL" in capsys.readouterr().err


def test_show_prints_the_backends_without_passwords(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HYPERLIFT_HOME", str(tmp_path))
    monkeypatch.setenv("HYPERLIFT_PROFILE", "cluster")
    monkeypatch.setenv("HYPERLIFT_POSTGRES_URL", "postgresql://hl:hunter2@db/h")
    assert main(["show"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    assert "dagster storage  PostgreSQL postgresql+psycopg2://hl:***@db/h_dagster" in out
    assert "feast registry   sql: postgresql+psycopg2://hl:***@db/h_feast" in out


def test_switching_profile_rewrites_the_projects_dagster_yaml_but_never_the_users(tmp_path):
    home = tmp_path / "dagster"
    ensure_dagster_home(home, LOCAL_DAGSTER_YAML)
    ensure_dagster_home(home, CLUSTER_DAGSTER_YAML)
    assert (home / "dagster.yaml").read_text() == CLUSTER_DAGSTER_YAML
    ensure_dagster_home(home, LOCAL_DAGSTER_YAML)
    assert (home / "dagster.yaml").read_text() == LOCAL_DAGSTER_YAML
    edited = LOCAL_DAGSTER_YAML + "run_coordinator:\n  module: dagster.core.run_coordinator\n"  # the user's edit
    for kept in ("storage: {}\n", edited):
        (home / "dagster.yaml").write_text(kept)
        ensure_dagster_home(home, CLUSTER_DAGSTER_YAML)
        assert (home / "dagster.yaml").read_text() == kept


def test_the_feast_cli_reads_the_sql_registry_from_the_environment(tmp_path, monkeypatch):
    settings = cluster(tmp_path, postgres_url="postgresql://hl@db/h")
    for name, value in settings.environment("redis://127.0.0.1:7001/0").items():
        monkeypatch.setenv(name, value)
    # What `feast -c feature_repo apply` loads (it expands ${VARS} from os.environ).
    config = load_repo_config(REPO_PATH, REPO_PATH / "feature_store.yaml")
    assert (config.registry.registry_type, config.registry.path) == ("sql", "postgresql+psycopg2://hl@db/h_feast")


@pytest.mark.postgres
def test_the_projects_asset_runs_on_the_cluster_profile(cluster_settings, online_redis_url, monkeypatch):
    """The unchanged `feast_registry` asset, configured from the environment as a deployment is: its run and events
    land in Dagster's PostgreSQL database, the Feast objects in the SQL registry."""
    settings = cluster_settings.model_copy(update={"redis_url": online_redis_url})
    with project_environment(settings) as env:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert (Path(env["DAGSTER_HOME"]) / "dagster.yaml").read_text() == CLUSTER_DAGSTER_YAML
        instance = dg.DagsterInstance.get()
        try:
            storages = {type(s).__name__ for s in (instance.run_storage, instance.event_log_storage,
                                                   instance.schedule_storage)}
            assert storages == {"PostgresRunStorage", "PostgresEventLogStorage", "PostgresScheduleStorage"}
            feast = FeastResource(redis_url=dg.EnvVar("REDIS_URL"), home=env["HYPERLIFT_HOME"])
            result = dg.materialize([feast_registry], resources={"feast": feast}, instance=instance)
            assert result.success
            assert instance.get_latest_materialization_event(dg.AssetKey("feast_registry")).run_id == result.run_id
            # A sensor tick, as the daemon records one (no public constructor: the daemon's own types).
            tick = TickData(instigator_origin_id="origin", instigator_name="retrain_sensor", selector_id="selector",
                            instigator_type=InstigatorType.SENSOR, status=TickStatus.SKIPPED, timestamp=1.0)
            instance.create_tick(tick)
        finally:
            instance.dispose()
    url = postgres_databases(settings).dagster
    assert query(url, "SELECT status FROM runs WHERE run_id = %s", result.run_id) == [("SUCCESS",)]
    rows = query(url, "SELECT dagster_event_type FROM event_logs WHERE run_id = %s", result.run_id)
    events = {kind for (kind,) in rows}
    # Run-level events keep their pre-1.0 names in the table (PIPELINE_*).
    assert {"STEP_START", "ASSET_MATERIALIZATION", "STEP_SUCCESS", "PIPELINE_SUCCESS"} <= events
    assert query(url, "SELECT asset_key FROM asset_keys") == [('["feast_registry"]',)]
    assert query(url, "SELECT selector_id, status FROM job_ticks") == [("selector", "SKIPPED")]
    views = query(postgres_databases(settings).feast, "SELECT feature_view_name FROM feature_views")
    assert "user_activity_fv" in {name for (name,) in views}
    assert sorted(name for (name,) in views) == sorted(
        result.asset_materializations_for_node("feast_registry")[0].metadata["feature_views"].value)
    assert not settings.feast_registry_path.exists()


@pytest.mark.postgres
def test_mlflow_registry_on_postgres(cluster_settings):
    uri = cluster_settings.mlflow_uri
    assert uri.startswith("postgresql+psycopg2://")
    client = MlflowClient(uri, registry_uri=uri)
    artifacts = cluster_settings.mlflow_artifacts_dir
    experiment = client.create_experiment("profiles", artifact_location=artifacts.as_uri())
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "qini", 0.25)
    client.set_terminated(run.info.run_id)
    client.create_registered_model("m")
    for _ in range(2):
        client.create_model_version("m", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    promote(uri, "m", "1")
    promote(uri, "m", "2")
    assert alias_version(uri, "m", "champion") == "2" and champion_history(uri, "m") == ["1"]
    # What another process sees, straight from the database.
    mlflow_db = postgres_databases(cluster_settings).mlflow
    assert query(mlflow_db, "SELECT alias, version FROM registered_model_aliases WHERE name = 'm'") == [("champion", 2)]
    assert query(mlflow_db, "SELECT value FROM latest_metrics WHERE key = 'qini'") == [(0.25,)]
    assert client.get_run(run.info.run_id).info.artifact_uri.startswith(artifacts.as_uri())


@pytest.mark.postgres
def test_feast_apply_into_the_sql_registry(cluster_settings, online_redis_url):
    repo = build_repo(cluster_settings.data_dir)
    store = feature_store(online_redis_url, cluster_settings)
    assert type(store.registry).__name__ == "SqlRegistry"
    store.apply(repo.objects())
    expected = sorted(fv.name for fv in repo.objects() if type(fv).__name__ == "FeatureView")
    again = feature_store(online_redis_url, cluster_settings)  # a fresh store reads the registry from the database
    assert sorted(fv.name for fv in again.list_feature_views()) == expected
    assert again.get_feature_service(repo.uplift_v1.name) == repo.uplift_v1
    rows = query(postgres_databases(cluster_settings).feast, "SELECT feature_view_name FROM feature_views")
    assert sorted(name for (name,) in rows) == expected
    assert not cluster_settings.feast_registry_path.exists()  # no file registry on the side
