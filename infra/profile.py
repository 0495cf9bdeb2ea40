"""Which backends a deployment uses, chosen by one switch: HYPERLIFT_PROFILE=local|cluster.

`local` (the default) keeps everything on one machine: Dagster and MLflow on SQLite under HYPERLIFT_HOME, the Feast
registry in a file. `cluster` moves the three stores every process shares to PostgreSQL: Dagster's runs, event log
and schedules (dagster-postgres), MLflow's tracking store and model registry, and Feast's SQL registry. Code above
the profile (assets, training, serving) reads the same settings properties and never asks which profile is on.

The cluster profile needs one server URL, HYPERLIFT_POSTGRES_URL=postgresql://user[:password]@host:5432/hyperlift,
from which each store gets its own database, `<name>_dagster`, `<name>_mlflow` and `<name>_feast` (Dagster and
MLflow both own tables named `runs` and `alembic_version`, so they cannot share one). A store of its own is named
by HYPERLIFT_DAGSTER_POSTGRES_URL, MLFLOW_TRACKING_URI or HYPERLIFT_FEAST_REGISTRY_URL. `python -m infra.profile
create-databases` creates the missing databases; `python -m infra.profile show` prints what the profile resolves to.

Usage: python -m infra.profile show | create-databases
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from infra.settings import HyperliftSettings

ProfileName = Literal["local", "cluster"]
DRIVER_SCHEME = "postgresql+psycopg2"
"""One driver for the three stores: dagster-postgres needs psycopg2, and SQLAlchemy 2.1's bare `postgresql://` means
psycopg 3, which nothing else here needs."""
POSTGRES_SCHEMES = ("postgres", "postgresql", DRIVER_SCHEME)
DEFAULT_DATABASE = "hyperlift"
STORES = ("dagster", "mlflow", "feast")
DAGSTER_URL_VARIABLE = "HYPERLIFT_DAGSTER_POSTGRES_URL"
LOCAL_DAGSTER_YAML = """# Written by infra.launch: SQLite storage under this folder (the default), no usage telemetry.
telemetry:
  enabled: false
"""

CLUSTER_DAGSTER_YAML = f"""# Written by infra.launch for the cluster profile: runs, event log and schedules in
# PostgreSQL (dagster-postgres, URL from ${DAGSTER_URL_VARIABLE}), no usage telemetry.
storage:
  postgres:
    postgres_url:
      env: {DAGSTER_URL_VARIABLE}
telemetry:
  enabled: false
"""


PROJECT_DAGSTER_YAMLS = (LOCAL_DAGSTER_YAML, CLUSTER_DAGSTER_YAML)
"""The dagster.yaml files infra.launch writes: one of them, unchanged, is the project's to replace when the profile
changes; any other file (the user's, or one the user edited) is kept."""


class ProfileError(ValueError):
    """The profile's settings are incomplete or malformed; the message says which variable to set and how."""


@dataclass(frozen=True)
class PostgresDatabases:
    """SQLAlchemy URLs (psycopg2 driver) of the cluster stores; `mlflow` is None when MLFLOW_TRACKING_URI names the
    store (any MLflow URI, e.g. an MLflow server's http://), which is then the user's to provision."""

    dagster: str
    mlflow: str | None
    feast: str

    def by_store(self) -> dict[str, str]:
        """{store: URL} of the databases this profile provisions, in STORES order."""
        urls = {"dagster": self.dagster, "mlflow": self.mlflow, "feast": self.feast}
        return {store: url for store, url in urls.items() if url is not None}


def sqlalchemy_url(url: str, variable: str) -> str:
    """`url` naming the psycopg2 driver (postgres://, postgresql:// → postgresql+psycopg2://); other schemes refused."""
    parts = urlsplit(url)
    if parts.scheme not in POSTGRES_SCHEMES or not parts.hostname:
        from infra.settings import masked_url

        raise ProfileError(
            f"{variable}={masked_url(url)!r} is not a PostgreSQL URL; set it like "
            "postgresql://user@127.0.0.1:5432/hyperlift"
        )
    return urlunsplit(parts._replace(scheme=DRIVER_SCHEME))


def with_database(url: str, database: str) -> str:
    """`url` pointing at another database on the same server (credentials, host and query kept)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def database_of(url: str) -> str:
    """The database name a PostgreSQL URL points at."""
    return urlsplit(url).path.lstrip("/")


def postgres_databases(settings: HyperliftSettings) -> PostgresDatabases:
    """The cluster stores' URLs: each one given explicitly, else `<name>_<store>` on HYPERLIFT_POSTGRES_URL's server."""

    def resolve(store: str, given: str | None, variable: str) -> str:
        if given:
            return sqlalchemy_url(given, variable)
        if settings.postgres_url:
            base = sqlalchemy_url(settings.postgres_url, "HYPERLIFT_POSTGRES_URL")
            return with_database(base, f"{database_of(base) or DEFAULT_DATABASE}_{store}")
        raise ProfileError(
            f"HYPERLIFT_PROFILE=cluster keeps the {store} store in PostgreSQL: set HYPERLIFT_POSTGRES_URL "
            f"(e.g. postgresql://hyperlift@db:5432/hyperlift) or {variable}, or unset HYPERLIFT_PROFILE for local"
        )

    # An MLFLOW_TRACKING_URI the user set is used as given (settings.mlflow_uri), whatever its scheme, and is theirs to
    # provision; one equal to the derived `<name>_mlflow` database is ours (infra.launch exports the derived URL to
    # its children, who must still create and migrate it).
    dagster = resolve("dagster", settings.dagster_postgres_url, DAGSTER_URL_VARIABLE)
    given = settings.mlflow_tracking_uri
    derived = resolve("mlflow", None, "MLFLOW_TRACKING_URI") if not given or settings.postgres_url else None
    return PostgresDatabases(
        dagster=dagster,
        mlflow=derived if not given or given == derived else None,
        feast=resolve("feast", settings.feast_registry_url, "HYPERLIFT_FEAST_REGISTRY_URL"),
    )


def mlflow_tracking_uri(settings: HyperliftSettings) -> str:
    """MLflow's tracking and registry store: MLFLOW_TRACKING_URI when set, else SQLite under the home folder (local)
    or PostgreSQL (cluster)."""
    if settings.mlflow_tracking_uri:
        return settings.mlflow_tracking_uri
    if settings.profile == "cluster":
        return str(postgres_databases(settings).mlflow)  # not None: MLFLOW_TRACKING_URI is unset
    return f"sqlite:///{settings.home / 'mlflow' / 'mlflow.db'}"


def feast_registry(settings: HyperliftSettings) -> tuple[str, str]:
    """(registry_type, path) of the Feast registry: a file under the home folder, or a SQL registry (cluster)."""
    if settings.profile == "cluster":
        return "sql", postgres_databases(settings).feast
    return "file", str(settings.feast_registry_path)


def dagster_yaml(settings: HyperliftSettings) -> str:
    """The dagster.yaml the profile wants in DAGSTER_HOME (the cluster one reads its URL from the environment)."""
    return CLUSTER_DAGSTER_YAML if settings.profile == "cluster" else LOCAL_DAGSTER_YAML


def profile_environment(settings: HyperliftSettings) -> dict[str, str]:
    """Variables child processes need to resolve the same backends (none beyond today's for `local`)."""
    registry_type, registry_path = feast_registry(settings)
    env = {"HYPERLIFT_FEAST_REGISTRY_TYPE": registry_type, "HYPERLIFT_FEAST_REGISTRY": registry_path}
    if settings.profile == "cluster":
        databases = postgres_databases(settings)
        env |= {
            "HYPERLIFT_PROFILE": "cluster",
            DAGSTER_URL_VARIABLE: databases.dagster,
            "HYPERLIFT_FEAST_REGISTRY_URL": databases.feast,
        }
        if settings.mlflow_artifacts_root is not None:
            env["HYPERLIFT_MLFLOW_ARTIFACTS_ROOT"] = str(settings.mlflow_artifacts_root)
        if settings.postgres_url:  # so a child knows the exported MLFLOW_TRACKING_URI is the derived database
            env["HYPERLIFT_POSTGRES_URL"] = settings.postgres_url
    if settings.offline_engine != "pandas":  # a Dagster code location launched by infra.launch runs the same engine
        env |= {"HYPERLIFT_OFFLINE_ENGINE": settings.offline_engine, "HYPERLIFT_SPARK_MASTER": settings.spark_master}
    return env


def create_databases(settings: HyperliftSettings, maintenance_database: str = "postgres") -> list[str]:
    """Create the cluster stores' databases that do not exist yet (tables are created by each store on first use).

    Connects to `maintenance_database` on each store's server; returns the names it created.
    """
    import psycopg2
    from psycopg2 import sql

    from infra.settings import masked_url

    created = []
    for url in postgres_databases(settings).by_store().values():
        name = database_of(url)
        dsn = with_database(url, maintenance_database).replace(f"{DRIVER_SCHEME}://", "postgresql://", 1)
        try:
            connection = psycopg2.connect(dsn, connect_timeout=10)
        except psycopg2.OperationalError as error:
            raise ConnectionError(
                f"cannot create {name}: PostgreSQL at {masked_url(dsn)} does not accept connections "
                f"({str(error).strip().splitlines()[0]}); check HYPERLIFT_POSTGRES_URL and that the server runs"
            ) from error
        connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                    created.append(name)
        finally:
            connection.close()
    return created


def describe(settings: HyperliftSettings) -> list[str]:
    """One line per backend the profile resolves to, passwords masked."""
    from infra.settings import masked_url

    registry_type, registry_path = feast_registry(settings)
    storage = "PostgreSQL " + masked_url(postgres_databases(settings).dagster) if settings.profile == "cluster" else (
        f"SQLite under {settings.resolved_dagster_home}")
    return [
        f"profile          {settings.profile}",
        f"dagster storage  {storage}",
        f"mlflow tracking  {masked_url(settings.mlflow_uri)}",
        f"mlflow artifacts {settings.mlflow_artifacts_dir}",
        f"feast registry   {registry_type}: {masked_url(registry_path)}",
        f"online store     {online_store(settings)}",
        f"offline engine   {offline_engine(settings)}",
    ]


def offline_engine(settings: HyperliftSettings) -> str:
    """The engine of the training-set join and materialization's read (HYPERLIFT_OFFLINE_ENGINE)."""
    if settings.offline_engine == "spark":
        return f"spark, master {settings.spark_master} (HYPERLIFT_SPARK_MASTER)"
    return "pandas, single process"


def online_store(settings: HyperliftSettings) -> str:
    """The Redis the online store is (REDIS_URL): a cluster's seeds, one server, or the embedded one."""
    from infra.redis_cluster import ClusterUrlError, is_cluster_url, parse_cluster_url
    from infra.settings import masked_url

    if not settings.redis_url:
        return "embedded redis-server (REDIS_URL unset)"
    if not is_cluster_url(settings.redis_url):
        return f"redis-server {masked_url(settings.redis_url)}"
    try:
        return f"Redis Cluster {parse_cluster_url(settings.redis_url).masked()} (Feast redis_type: redis_cluster)"
    except ClusterUrlError as error:
        raise ProfileError(f"REDIS_URL: {error}") from error


def main(argv: list[str]) -> int:
    """Entry point: `show` the resolved backends, or `create-databases` for the cluster profile."""
    from infra.settings import HyperliftSettings

    settings = HyperliftSettings()
    try:
        if argv == ["show"]:
            print("\n".join(describe(settings)))
            return 0
        if argv == ["create-databases"]:
            if settings.profile != "cluster":
                print("HYPERLIFT_PROFILE is local: its stores are files and need no database", file=sys.stderr)
                return 2
            created = create_databases(settings)
            print(f"created {', '.join(created)}" if created else "every database exists already")
            return 0
    except ProfileError as error:
        print(error, file=sys.stderr)
        return 2
    except ConnectionError as error:
        print(error, file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
