"""Runtime settings read once from the environment; every path of runtime state lives under one folder."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlparse, urlsplit, urlunsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from infra import profile as backends
from infra.home_location import ensure_relocated
from infra.redis_cluster import feast_online_store, is_cluster_url
from infra.redis_tls import TlsOptions

REPO_ROOT = Path(__file__).resolve().parent.parent


class HyperliftSettings(BaseSettings):
    """Where runtime state lives and which services to use; defaults work on one machine with nothing pre-started."""

    model_config = SettingsConfigDict(env_prefix="HYPERLIFT_", extra="ignore")

    home: Path = Field(default=REPO_ROOT / ".hyperlift", description="Root of all runtime state (git-ignored).")
    reports_dir: Path = Field(default=REPO_ROOT / "reports", description="Where demo and evaluation reports go.")
    redis_url: str | None = Field(
        default=None,
        validation_alias="REDIS_URL",
        description="An existing Redis server, or a cluster as redis+cluster://host:port[,host:port...] "
        "(infra/redis_cluster.py); when unset the project starts an embedded redis-server.",
    )
    mlflow_tracking_uri: str | None = Field(default=None, validation_alias="MLFLOW_TRACKING_URI")
    dagster_home: Path | None = Field(default=None, validation_alias="DAGSTER_HOME")
    landing_source: Literal["simulator", "files"] = Field(
        default="simulator",
        description="Who fills the landing folder: the simulated shop (demo) or the shop's own files (docs/landing.md).",
    )
    landing_dir: Path | None = Field(default=None, description="The landing folder; default <home>/landing.")

    @model_validator(mode="after")
    def _relocated_home(self) -> "HyperliftSettings":
        """A home copied elsewhere is rewritten to read and write only itself (infra.home_location), the first time
        a process opens it."""
        ensure_relocated(self.home)
        return self

    @property
    def data_dir(self) -> Path:
        """Parquet data: raw, validated and quarantined events, feature tables, training sets."""
        return self.home / "data"

    @property
    def resolved_landing_dir(self) -> Path:
        """Where the shop's files (or the simulator's) land: HYPERLIFT_LANDING_DIR, else <home>/landing."""
        return self.landing_dir or self.home / "landing"

    @property
    def redis_dir(self) -> Path:
        """Working directory (dump file, log) of the embedded redis-server."""
        return self.home / "redis"

    @property
    def feast_registry_path(self) -> Path:
        """The Feast file registry."""
        return self.home / "feast" / "registry.db"

    @property
    def mlflow_uri(self) -> str:
        """MLflow tracking URI: the given one, else the profile's (SQLite under the home folder, or PostgreSQL)."""
        return backends.mlflow_tracking_uri(self)

    @property
    def mlflow_artifacts_dir(self) -> Path:
        """Artifact root for experiments created by the project (HYPERLIFT_MLFLOW_ARTIFACTS_ROOT: a shared path)."""
        return self.mlflow_artifacts_root or self.home / "mlflow" / "artifacts"

    @property
    def demo_clock_path(self) -> Path:
        """The simulated instant the demo's data is fresh at (written by `make demo`, read by `make serve`)."""
        return self.home / "demo_clock"

    @property
    def resolved_dagster_home(self) -> Path:
        """DAGSTER_HOME: the given one, or a folder under the home folder (SQLite run and event storage)."""
        return self.dagster_home or self.home / "dagster"

    def environment(self, redis_url: str, redis_timeout_s: float | None = None) -> dict[str, str]:
        """Variables that child processes (dagster, feast CLI, uvicorn) need to see the same state and services."""
        return {
            "HYPERLIFT_HOME": str(self.home),
            "HYPERLIFT_REPORTS_DIR": str(self.reports_dir),
            "REDIS_URL": redis_url,
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "DAGSTER_HOME": str(self.resolved_dagster_home),
            "HYPERLIFT_FEAST_REDIS": feast_redis_connection_string(redis_url, redis_timeout_s),
            # redis_cluster for a redis+cluster:// URL (infra/redis_cluster.py), else redis: feature_store.yaml
            "HYPERLIFT_FEAST_REDIS_TYPE": "redis_cluster" if is_cluster_url(redis_url) else "redis",
            **backends.profile_environment(self),  # the Feast registry, and the cluster profile's stores
        }

    # The backend profile (infra/profile.py, docs/profiles.md): `local` keeps every store on this machine.
    profile: Literal["local", "cluster"] = Field(
        default="local", description="HYPERLIFT_PROFILE: local (SQLite, file registry) or cluster (PostgreSQL)."
    )
    postgres_url: str | None = Field(
        default=None, description="HYPERLIFT_POSTGRES_URL: the cluster profile's server; each store gets a database."
    )
    dagster_postgres_url: str | None = Field(default=None, description="Dagster's own database (cluster profile).")
    feast_registry_url: str | None = Field(default=None, description="The Feast SQL registry's database (cluster).")
    mlflow_artifacts_root: Path | None = Field(
        default=None, description="Artifact root shared by every machine (cluster); default under the home folder."
    )
    # The offline engine (docs/profiles.md "Offline engine"): independent of the profile, like REDIS_URL.
    offline_engine: Literal["pandas", "spark"] = Field(
        default="pandas",
        description="HYPERLIFT_OFFLINE_ENGINE: pandas (single process, no extra dependency) or spark (the `spark` "
        "extra and Java 17) for the training-set join and materialization's read.",
    )
    spark_master: str = Field(
        default="local[*]", description="HYPERLIFT_SPARK_MASTER: the Spark master of the spark engine (local[*], "
        "spark://host:7077, yarn, k8s://...)."
    )


def feast_redis_connection_string(redis_url: str, timeout_s: float | None = None) -> str:
    """Translate redis://[:password@]host:port[/db] into Feast's "host:port,db=N[,password=...]" form.

    With `timeout_s`, every connect and read is bounded and redis-py's retries are off (`retry=null`): by default
    redis-py retries a timed-out call with backoff for about 9 s, which would stall a decision instead of letting
    it fall back.
    """
    if is_cluster_url(redis_url):  # Feast's cluster form: host1:port1,host2:port2[,password=...]
        return feast_online_store(redis_url, timeout_s)[1]
    parsed = urlparse(redis_url)
    if parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
        raise ValueError(
            f"REDIS_URL={masked_url(redis_url)!r} is not a redis:// URL; set it like redis://127.0.0.1:6379/0 or unset it "
            "to use the embedded server (a Redis Cluster: redis+cluster://host1:port1,host2:port2)."
        )
    parts = [f"{parsed.hostname}:{parsed.port or 6379}"]
    db = parsed.path.lstrip("/")
    parts.append(f"db={int(db) if db else 0}")
    if parsed.password:
        parts.append(f"password={parsed.password}")
    if parsed.scheme == "rediss":  # TLS, with the URL's options (infra/redis_tls.py)
        parts += TlsOptions.from_query(parsed.query).feast_params()
    if timeout_s is not None:
        parts += [f"socket_timeout={timeout_s}", f"socket_connect_timeout={timeout_s}", "retry=null"]
    return ",".join(parts)


def masked_url(url: str) -> str:
    """`url` fit to print: its password, if any, replaced by `***` (redis://:***@host:6379/0)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
