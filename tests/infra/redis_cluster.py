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

from infra.redis_cluster import cluster_topology, node_connection
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


def master_contents(client, with_pending: bool = False, with_ttl: bool = False) -> dict[bytes, tuple]:
    """{key: (type, value[, has a TTL])} of every key on every master, read through each master's own connection
    (SCAN of one node; a key seen on two masters fails the test), values compared by content: hashes, strings, zsets
    with scores, streams as their entries and groups (name, last delivered, pending count), with each group's
    pending entries (id, consumer, deliveries) when `with_pending`."""
    found: dict[bytes, tuple] = {}
    for node in cluster_topology(client):
        if node.role != "master":
            continue
        own = node_connection(client, node)
        for key in own.scan_iter(count=1000):
            assert key not in found, f"{key!r} on two masters"
            kind = own.type(key).decode()
            if kind == "hash":
                value: object = own.hgetall(key)
            elif kind == "string":
                value = own.get(key)
            elif kind == "zset":
                value = own.zrange(key, 0, -1, withscores=True)
            elif kind == "stream":
                groups = [(g["name"], g["last-delivered-id"], g["pending"]) for g in own.xinfo_groups(key)]
                value = (own.xrange(key), groups)
                if with_pending:
                    value += ([(p["message_id"], p["consumer"], p["times_delivered"])
                               for g in groups for p in own.xpending_range(key, g[0], "-", "+", 100)],)
            else:
                raise AssertionError(f"unexpected {kind} {key!r}")
            found[key] = (kind, value, own.pttl(key) > 0) if with_ttl else (kind, value)
    return found
