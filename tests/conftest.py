"""Shared fixtures: an isolated HYPERLIFT_HOME, a real Redis server, a real MLflow store in a temp dir."""

from __future__ import annotations

import os
import sqlite3
import sys
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


@pytest.fixture(scope="session", autouse=True)
def _mlflow_schema_from_a_template() -> Iterator[None]:
    """A new MLflow SQLite store gets its tables by a copy of one store built once per session by MLflow's own
    create-and-migrate (3-6 s of alembic migrations per store otherwise, for a hundred-odd stores in a full run).
    Only an empty SQLite file is filled this way; any other database goes through MLflow's code unchanged."""
    import mlflow.store.db.utils as db_utils
    import mlflow.store.model_registry.sqlalchemy_store as registry_store
    import sqlalchemy

    original = db_utils._initialize_tables
    template = _SESSION_HOME / "mlflow-schema-template.db"

    def initialize(engine: sqlalchemy.engine.Engine) -> None:
        database = engine.url.database
        if (engine.dialect.name != "sqlite" or not database or database == ":memory:" or database.startswith("file:")
                or sqlalchemy.inspect(engine).get_table_names()):
            original(engine)
            return
        if not template.exists():
            building = template.with_suffix(".building")
            scratch = sqlalchemy.create_engine(f"sqlite:///{building}")
            original(scratch)
            scratch.dispose()
            building.rename(template)
        source = sqlite3.connect(template)
        try:
            with engine.connect() as connection:
                source.backup(connection.connection.dbapi_connection)
        finally:
            source.close()

    db_utils._initialize_tables = registry_store._initialize_tables = initialize
    yield
    db_utils._initialize_tables = registry_store._initialize_tables = original


def _pickled_modules(model_dir: Path) -> frozenset[str] | None:
    """The modules the pickles of a saved model name (what loading it imports), or None when it is not a folder."""
    import pickletools

    if not model_dir.is_dir():
        return None
    names: set[str] = set()
    for path in model_dir.rglob("*.pkl"):
        for _, arg, _ in pickletools.genops(path.read_bytes()):
            if isinstance(arg, str):
                names.update(part for part in arg.split() if part in sys.modules)
    return frozenset(names)


@pytest.fixture(scope="session", autouse=True)
def _mlflow_requirements_inferred_once_per_kind() -> Iterator[None]:
    """MLflow infers a logged model's pip requirements by loading it in a new Python process (8-20 s a model, for
    dozens of models a run). That answer depends on what loading imports: the flavor and the modules the model's
    pickles name. It is computed by MLflow once per such kind per session and reused, so every model still gets the
    requirements MLflow would write for it."""
    import mlflow.utils.requirements_utils as requirements_utils
    from mlflow.utils.uri import is_local_uri
    from mlflow.utils.file_utils import local_file_uri_to_path

    original = requirements_utils._capture_imported_modules
    answers: dict[tuple, list[str]] = {}

    def capture(model_uri, flavor, record_full_module=False, extra_env_vars=None):  # noqa: ANN001, ANN202
        modules = (_pickled_modules(Path(local_file_uri_to_path(str(model_uri)))) if is_local_uri(str(model_uri))
                   else None)
        if modules is None:
            return original(model_uri, flavor, record_full_module, extra_env_vars)
        key = (flavor, record_full_module, tuple(sorted((extra_env_vars or {}).items())), modules)
        if key not in answers:
            answers[key] = original(model_uri, flavor, record_full_module, extra_env_vars)
        return list(answers[key])

    requirements_utils._capture_imported_modules = capture
    yield
    requirements_utils._capture_imported_modules = original


@pytest.fixture(autouse=True)
def _forget_mlflow_globals() -> Iterator[None]:
    """mlflow.set_tracking_uri/set_registry_uri also write MLFLOW_*_URI into os.environ; drop them between tests
    so one test's store never becomes the next test's default (our settings read MLFLOW_TRACKING_URI)."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(name, None)
    yield
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(name, None)
