"""A real Redis Cluster for the `redis_cluster` tests: six redis-server processes of the shipped binary (three
masters, three replicas, `redis-cli --cluster create`), started once per session in a temp folder and stopped at
its end; each test gets it flushed.

Test modules import the fixtures (`from tests.infra.redis_cluster import cluster_url, redis_cluster  # noqa: F401`)
and mark themselves `pytestmark = pytest.mark.redis_cluster` (`pytest -m "not redis_cluster"` leaves them out).
A test that kills a master gets a cluster of its own (`own_cluster`): the shared one stays whole.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.redis_cluster_server import LocalRedisCluster

_shared: LocalRedisCluster | None = None


def shared_cluster(request: pytest.FixtureRequest) -> LocalRedisCluster:
    """The session's cluster, started at the first use (whichever module imports the fixture first)."""
    global _shared
    if _shared is None:
        cluster = LocalRedisCluster(Path(tempfile.mkdtemp(prefix="hyperlift-cluster-")))
        cluster.start()
        _shared = cluster

        def stop() -> None:
            global _shared
            cluster.stop()
            shutil.rmtree(cluster.workdir, ignore_errors=True)  # node logs and nodes.conf: nothing to keep
            _shared = None

        request.session.config.add_cleanup(stop)
    return _shared


@pytest.fixture(scope="session")
def redis_cluster(request: pytest.FixtureRequest) -> LocalRedisCluster:
    """The session's local Redis Cluster (three masters, one replica each)."""
    return shared_cluster(request)


@pytest.fixture
def cluster_url(redis_cluster: LocalRedisCluster) -> str:
    """The shared cluster's REDIS_URL (redis+cluster://...), every master flushed for this test."""
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[LocalRedisCluster]:
    """A cluster of this test alone (failover tests kill its masters)."""
    with LocalRedisCluster(tmp_path / "cluster") as cluster:
        yield cluster
