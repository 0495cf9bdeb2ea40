from pathlib import Path

import pytest

from infra.settings import HyperliftSettings, feast_redis_connection_string, masked_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6380/0", "127.0.0.1:6380,db=0"),
        ("redis://localhost:6379/3", "localhost:6379,db=3"),
        ("redis://localhost", "localhost:6379,db=0"),
        ("redis://:s3cret@cache:7000/2", "cache:7000,db=2,password=s3cret"),
        ("rediss://cache:6380/0", "cache:6380,db=0,ssl=true,ssl_cert_reqs=required,ssl_check_hostname=true"),
    ],
)
def test_feast_connection_string(url, expected):
    assert feast_redis_connection_string(url) == expected


def test_non_redis_url_is_rejected_with_what_to_do():
    with pytest.raises(ValueError, match=r"not a redis:// URL; set it like redis://127.0.0.1:6379/0"):
        feast_redis_connection_string("http://127.0.0.1:6379")


def test_state_lives_under_home_and_env_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("HYPERLIFT_HOME", str(tmp_path / "h"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    settings = HyperliftSettings()
    assert settings.data_dir == tmp_path / "h" / "data"
    assert settings.feast_registry_path == tmp_path / "h" / "feast" / "registry.db"
    assert settings.mlflow_uri == f"sqlite:///{tmp_path / 'h' / 'mlflow' / 'mlflow.db'}"
    assert settings.resolved_dagster_home == tmp_path / "h" / "dagster"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://db/mlflow")
    monkeypatch.setenv("DAGSTER_HOME", "/srv/dagster")
    settings = HyperliftSettings()
    assert settings.mlflow_uri == "postgresql://db/mlflow"
    assert settings.resolved_dagster_home == Path("/srv/dagster")


def test_environment_for_child_processes(tmp_path):
    env = HyperliftSettings(home=tmp_path).environment("redis://127.0.0.1:7001/0")
    assert env["REDIS_URL"] == "redis://127.0.0.1:7001/0"
    assert env["HYPERLIFT_FEAST_REDIS"] == "127.0.0.1:7001,db=0"
    assert env["HYPERLIFT_FEAST_REGISTRY"] == str(tmp_path / "feast" / "registry.db")
    assert env["HYPERLIFT_HOME"] == str(tmp_path)


def test_timeouts_and_no_retries_for_the_serving_path():
    assert feast_redis_connection_string("redis://h:1/2", timeout_s=0.05) == (
        "h:1,db=2,socket_timeout=0.05,socket_connect_timeout=0.05,retry=null"
    )


def test_a_bad_redis_url_is_refused_without_showing_its_password():
    with pytest.raises(ValueError, match="is not a redis:// URL") as refused:
        feast_redis_connection_string("http://:hunter2@cache.example:6379/0")
    assert "hunter2" not in str(refused.value) and "http://:***@cache.example:6379/0" in str(refused.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://default:hunter2@cache.example:6380/1", "rediss://default:***@cache.example:6380/1"),
        ("postgresql://mlflow:hunter2@db/mlflow", "postgresql://mlflow:***@db/mlflow"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ],
)
def test_urls_are_printed_without_their_password(url, shown):
    assert masked_url(url) == shown
