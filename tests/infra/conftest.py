"""PostgreSQL for the cluster-profile tests: the `postgres` marker, and a fresh set of databases per test."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.profile import create_databases, database_of, postgres_databases, with_database
from infra.settings import HyperliftSettings

POSTGRES_URL = os.environ.get("HYPERLIFT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
"""A server the tests may create and drop databases on (this machine kind runs one with trust auth)."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "postgres: needs a PostgreSQL server at HYPERLIFT_TEST_POSTGRES_URL (default "
        "postgresql://postgres@127.0.0.1:5432/test); skipped with the reason when none answers",
    )


@functools.cache
def postgres_unreachable() -> str | None:
    """Why the test server cannot be used, or None when it answers (asked once per session)."""
    try:
        import dagster_postgres  # noqa: F401
        import psycopg2
    except ImportError as error:
        return f"{error.name} is not installed; `pip install -e '.[dev]'` installs the cluster profile's drivers"
    try:
        psycopg2.connect(POSTGRES_URL, connect_timeout=2).close()
    except psycopg2.OperationalError as error:
        return (
            f"no PostgreSQL server answers at {POSTGRES_URL} ({str(error).strip().splitlines()[0]}); start one or "
            "point HYPERLIFT_TEST_POSTGRES_URL at a server where this user may CREATE DATABASE"
        )
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("postgres") is not None and (reason := postgres_unreachable()):
        pytest.skip(reason)


def drop_databases(names: list[str]) -> None:
    """Drop the databases, closing any connection a store's pool still holds (PostgreSQL 13+)."""
    import psycopg2
    from psycopg2 import sql

    connection = psycopg2.connect(POSTGRES_URL)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            for name in names:
                cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        connection.close()


@pytest.fixture
def cluster_settings(tmp_path: Path) -> Iterator[HyperliftSettings]:
    """Cluster-profile settings on databases of this test alone (created by the profile, dropped afterwards)."""
    prefix = f"hl_test_{uuid.uuid4().hex[:12]}"
    settings = HyperliftSettings(
        home=tmp_path / "cluster", reports_dir=tmp_path / "cluster" / "reports", profile="cluster",
        postgres_url=with_database(POSTGRES_URL, prefix), mlflow_artifacts_root=tmp_path / "shared" / "artifacts",
    )
    names = [database_of(url) for url in postgres_databases(settings).by_store().values()]
    try:
        create_databases(settings)
        yield settings
    finally:
        drop_databases(names)


def query(url: str, statement: str, *args: object) -> list[tuple]:
    """Rows of one SQL statement on a store's database (psycopg2; `url` may name the SQLAlchemy driver)."""
    import psycopg2

    connection = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://", 1))
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement, args)
            return cursor.fetchall()
    finally:
        connection.close()
