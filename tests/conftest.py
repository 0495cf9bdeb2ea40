"""Shared fixtures: an isolated HYPERLIFT_HOME, a real Redis server, a real MLflow store in a temp dir."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

# Before any project module reads settings: all runtime state of the test session goes to a throw-away folder.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="hyperlift-test-"))
os.environ["HYPERLIFT_HOME"] = str(_SESSION_HOME)
os.environ["HYPERLIFT_REPORTS_DIR"] = str(_SESSION_HOME / "reports")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("DAGSTER_HOME", None)
for _name in ("HYPERLIFT_PROFILE", "HYPERLIFT_POSTGRES_URL", "HYPERLIFT_DAGSTER_POSTGRES_URL",
              "HYPERLIFT_FEAST_REGISTRY_URL", "HYPERLIFT_MLFLOW_ARTIFACTS_ROOT"):
    os.environ.pop(_name, None)  # the session runs on the local profile; cluster tests build their own settings
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from infra.redis_server import EmbeddedRedis  # noqa: E402
from infra.settings import HyperliftSettings  # noqa: E402


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """REDIS_URL when set (its database is flushed: point it at a scratch db), else an embedded redis-server."""
    external = os.environ.get("REDIS_URL")
    if external:
        yield external
        return
    with EmbeddedRedis(_SESSION_HOME / "redis") as server:
        yield server.url


class RedisDatabases:
    """Hands out a flushed Redis database per user, so tests that write Feast keys never see each other's."""

    def __init__(self, base_url: str):
        self.base = base_url.rsplit("/", 1)[0] if base_url.count("/") > 2 else base_url
        self.next_db = 1

    def fresh(self) -> str:
        """URL of the next database (1..15), flushed."""
        if self.next_db > 15:
            self.next_db = 1
        url = f"{self.base}/{self.next_db}"
        self.next_db += 1
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
        return url


@pytest.fixture(scope="session")
def redis_databases(redis_url: str) -> RedisDatabases:
    """Allocator of flushed Redis databases on the session's server."""
    return RedisDatabases(redis_url)


@pytest.fixture
def online_redis_url(redis_databases: RedisDatabases) -> str:
    """A flushed Redis database for one test."""
    return redis_databases.fresh()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh runtime-state folder for one test."""
    return tmp_path / "hyperlift"


@pytest.fixture
def settings(home: Path) -> HyperliftSettings:
    """Settings whose state (data, registry, MLflow SQLite store) lives in the test's own folder."""
    return HyperliftSettings(home=home, reports_dir=home / "reports")


@pytest.fixture(autouse=True)
def _forget_mlflow_globals() -> Iterator[None]:
    """mlflow.set_tracking_uri/set_registry_uri also write MLFLOW_*_URI into os.environ; drop them between tests
    so one test's store never becomes the next test's default (our settings read MLFLOW_TRACKING_URI)."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(name, None)
    yield
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(name, None)
