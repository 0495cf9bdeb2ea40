"""REDIS_URL=redis+cluster://…: parsing, clear errors, Feast's cluster config, and the clients built from it (real
cluster for the clients)."""

from __future__ import annotations

import pytest
import redis
from redis.cluster import RedisCluster

from feature_repo.store import feature_store
from infra.redis_cluster import (
    ClusterUrlError,
    feast_online_store,
    is_cluster_url,
    parse_cluster_url,
    redis_client,
    slot_client,
)
from infra.settings import HyperliftSettings, feast_redis_connection_string
from tests.infra.redis_cluster import cluster_url, own_cluster, redis_cluster  # noqa: F401


def test_a_cluster_url_names_its_seeds_and_credentials():
    address = parse_cluster_url("redis+cluster://app:s%40cret@10.0.0.5:7000,10.0.0.6:7001/0")
    assert address.nodes == (("10.0.0.5", 7000), ("10.0.0.6", 7001))
    assert (address.username, address.password) == ("app", "s@cret")
    assert address.node_url("10.0.0.7", 7002) == "redis://app:s%40cret@10.0.0.7:7002/0"
    assert address.masked() == "redis+cluster://app:***@10.0.0.5:7000,10.0.0.6:7001"
    assert parse_cluster_url("redis+cluster://:pw@h:1").password == "pw"
    assert parse_cluster_url("redis+cluster://h:1").password is None
    assert is_cluster_url("redis+cluster://h:1") and not is_cluster_url("redis://h:1/0") and not is_cluster_url(None)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://h:1/3", "a Redis Cluster has no database '3' \\(only 0\\): drop the path"),
        ("redis+cluster://h:1,h2", "every node needs host:port \\(got 'h2'\\); write it like redis\\+cluster://"),
        ("redis+cluster://:hunter2@h:99999", "every node needs host:port"),
        ("rediss+cluster://h:1?ssl_cert_reqs=maybe", "ssl_cert_reqs='maybe': use one of required, optional, none"),
        ("redis://h:1", "not a Redis Cluster URL: write it like redis\\+cluster://10.0.0.5:7000"),
    ],
)
def test_a_bad_cluster_url_says_how_to_write_it(url, message):
    with pytest.raises(ClusterUrlError, match=message) as refused:
        parse_cluster_url(url)
    assert "hunter2" not in str(refused.value)


def test_feast_gets_its_cluster_config_from_the_url(tmp_path):
    url = "redis+cluster://:pw@10.0.0.5:7000,10.0.0.6:7000"
    assert feast_online_store(url, 0.05) == (
        "redis_cluster", "10.0.0.5:7000,10.0.0.6:7000,password=pw,socket_timeout=0.05,socket_connect_timeout=0.05"
    )
    assert feast_redis_connection_string(url) == "10.0.0.5:7000,10.0.0.6:7000,password=pw"
    env = HyperliftSettings(home=tmp_path).environment(url)
    assert (env["HYPERLIFT_FEAST_REDIS_TYPE"], env["REDIS_URL"]) == ("redis_cluster", url)
    assert HyperliftSettings(home=tmp_path).environment("redis://h:1/0")["HYPERLIFT_FEAST_REDIS_TYPE"] == "redis"
    store = feature_store(url, HyperliftSettings(home=tmp_path), redis_timeout_s=0.05)
    assert store.config.online_store.redis_type.value == "redis_cluster"
    assert store.config.online_store.connection_string.startswith("10.0.0.5:7000,10.0.0.6:7000,password=pw")


@pytest.mark.redis_cluster
def test_clients_follow_the_url(cluster_url, redis_databases):  # noqa: F811
    cluster = redis_client(cluster_url, timeout_s=0.5)
    single = redis_client(redis_databases.fresh(), timeout_s=0.5)
    assert isinstance(cluster, RedisCluster) and type(single) is redis.Redis
    assert single.connection_pool.connection_kwargs["socket_timeout"] == 0.5 and single.get_retry() is None
    cluster.set("k", "v")
    assert cluster.get("k") == b"v" and len(cluster.get_primaries()) == 3


@pytest.mark.redis_cluster
def test_the_slot_client_follows_its_slot_to_the_new_master_after_a_failover(own_cluster):  # noqa: F811
    client = slot_client(own_cluster.url, "hyperlift:decisions", timeout_s=0.5)
    assert client.xadd("hyperlift:decisions", {"n": 1}) and client.hset("{hyperlift:decisions}:wal_writers", "w", 1)
    first = int(client.info("server")["tcp_port"])
    assert first == own_cluster.master_of("hyperlift:decisions").port
    elsewhere = next(k for k in (f"k{i}" for i in range(100)) if own_cluster.master_of(k).port != first)
    with pytest.raises(redis.exceptions.MovedError):  # a key on another master: not this client's to write
        client.set(elsewhere, 1)
    old, new = own_cluster.kill_master("hyperlift:decisions")
    assert old == first
    # the connection to the killed master is gone; the next connect asks the cluster and reaches the promoted replica
    assert client.xlen("hyperlift:decisions") == 1
    assert int(client.info("server")["tcp_port"]) == new


def test_profile_show_names_the_online_store(tmp_path, capsys, monkeypatch):
    from infra.profile import main

    monkeypatch.setenv("HYPERLIFT_HOME", str(tmp_path))
    monkeypatch.setenv("REDIS_URL", "redis+cluster://:hunter2@10.0.0.5:7000,10.0.0.6:7000")
    assert main(["show"]) == 0
    out = capsys.readouterr().out
    assert "online store     Redis Cluster redis+cluster://:***@10.0.0.5:7000,10.0.0.6:7000 (Feast redis_type: " \
           "redis_cluster)" in out and "hunter2" not in out
    monkeypatch.setenv("REDIS_URL", "redis+cluster://:hunter2@10.0.0.5/2")
    assert main(["show"]) == 2
    err = capsys.readouterr().err
    assert "REDIS_URL: a Redis Cluster has no database '2'" in err and "hunter2" not in err
    monkeypatch.delenv("REDIS_URL")
    assert main(["show"]) == 0
    assert "online store     embedded redis-server (REDIS_URL unset)" in capsys.readouterr().out
