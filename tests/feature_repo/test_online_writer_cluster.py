"""OnlineWriter and Feast on a real Redis Cluster: the same hashes as on one server, read back through Feast."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import redis
from redis.cluster import RedisCluster

from feature_repo.definitions import build_repo
from feature_repo.online_writer import OnlineWriter
from feature_repo.store import feature_store
from infra.redis_cluster import redis_client, slot
from infra.redis_cluster_server import LocalRedisCluster
from tests.feature_repo.test_online_writer import T0, mixed_frame, mixed_view, profile_row
from tests.infra.redis_cluster import cluster_url, redis_cluster  # noqa: F401

pytestmark = pytest.mark.redis_cluster


@pytest.fixture
def stores(settings, redis_databases, cluster_url):  # noqa: F811
    """(standalone store, cluster store) of one registry, both online stores empty."""
    repo = build_repo(settings.data_dir)
    single = feature_store(redis_databases.fresh(), settings)
    mixed = mixed_view(repo, settings.data_dir)
    single.apply([*repo.objects(), mixed.batch_source, mixed])
    cluster = feature_store(cluster_url, settings)
    cluster.refresh_registry()
    return single, cluster


def dump_single(store) -> dict[bytes, dict[bytes, bytes]]:
    client = store._get_provider().online_store._get_client(store.config.online_store)
    return {key: client.hgetall(key) for key in client.keys()}


def dump_cluster(cluster: LocalRedisCluster) -> tuple[dict[bytes, dict[bytes, bytes]], dict[int, int]]:
    """Every hash of the cluster, and how many keys each master holds (by port)."""
    hashes, per_master = {}, {}
    for port in cluster.master_ports():
        client = redis.Redis(host="127.0.0.1", port=port)
        keys = client.keys()
        per_master[port] = len(keys)
        hashes |= {key: client.hgetall(key) for key in keys}
        client.close()
    return hashes, per_master


def many_users(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    return pd.DataFrame({
        "user_id": np.arange(n, dtype=np.int64) * 7919 - 50_000,
        "event_timestamp": T0 + pd.to_timedelta(rng.integers(0, 10**6, n), unit="s"),
        "region_code": rng.integers(0, 4, n), "is_mobile": rng.integers(0, 2, n),
        "consent_marketing": rng.integers(0, 2, n),
    })


def test_the_cluster_store_is_feasts_redis_cluster(stores):
    _, cluster = stores
    config = cluster.config.online_store
    assert config.redis_type.value == "redis_cluster"
    assert isinstance(cluster._get_provider().online_store._get_client(config), RedisCluster)


@pytest.mark.parametrize("chunk_rows", [3, 20_000])
def test_bulk_write_on_a_cluster_stores_what_one_server_stores(stores, redis_cluster, chunk_rows):  # noqa: F811
    single, cluster = stores
    frame = mixed_frame()
    assert OnlineWriter(single).write("mixed_fv", frame) == 7
    assert OnlineWriter(cluster, chunk_rows=chunk_rows).write("mixed_fv", frame) == 7
    expected = dump_single(single)
    hashes, per_master = dump_cluster(redis_cluster)
    assert len(expected) == 7 and hashes == expected
    # each key is on the master of its slot
    for port in per_master:
        client = redis.Redis(host="127.0.0.1", port=port)
        assert all(redis_cluster.master_of(key).port == port for key in client.keys())
        client.close()


def test_newer_or_equal_on_a_cluster_keeps_frame_order_per_entity(stores, redis_cluster):  # noqa: F811
    single, cluster = stores
    frame = pd.concat([
        profile_row(8, T0, 1), profile_row(8, T0 - pd.Timedelta(hours=1), 2), profile_row(9, T0, 3),
        profile_row(9, T0 + pd.Timedelta(hours=1), 4), profile_row(9, T0, 5), many_users(500),
    ])
    written = [OnlineWriter(store, chunk_rows=97).write("user_profile_fv", frame, mode="newer_or_equal")
               for store in (single, cluster)]
    assert written == [503, 503]
    hashes, per_master = dump_cluster(redis_cluster)
    assert hashes == dump_single(single) and len(hashes) == 502
    assert sorted(per_master.values())[0] > 100  # 502 users over three masters: every one holds a share
    # the same frame again changes nothing: rows equal to what is stored are accepted (500 + user 8's T0 + user 9's
    # T0+1h), older ones refused (user 8's T0-1h, user 9's two T0 rows)
    assert OnlineWriter(cluster).write("user_profile_fv", frame, mode="newer_or_equal") == 502
    assert dump_cluster(redis_cluster)[0] == hashes


def test_feast_reads_back_through_the_cluster_what_it_reads_from_one_server(stores):
    single, cluster = stores
    frame = pd.concat([mixed_frame()])
    for store in (single, cluster):
        OnlineWriter(store).write("mixed_fv", frame)
    names = [f"mixed_fv:{n}" for n in ("f32", "f64", "i64", "i32", "flag", "label")]
    rows = [{"user_id": int(u)} for u in [*frame["user_id"], 123_456]]  # and one user nobody wrote
    read = [store.get_online_features(features=names, entity_rows=rows).to_dict() for store in (single, cluster)]
    assert read[1]["i64"] == [0, -1, None, 2**62, -(2**63), 127, 128, None]
    assert read[1]["label"] == ["", "héllo", None, "x" * 200, "a", "b", "c", None]
    assert read[0].keys() == read[1].keys()
    for name in read[0]:
        assert [repr(v) for v in read[1][name]] == [repr(v) for v in read[0][name]], name  # NaN-safe, -0.0-exact


def test_feasts_own_materialize_writes_the_cluster_like_the_writer(stores, redis_cluster):  # noqa: F811
    single, cluster = stores
    frame = many_users(300)
    OnlineWriter(single).write("user_profile_fv", frame)
    view = cluster.get_feature_view("user_profile_fv")
    provider = cluster._get_provider()
    import pyarrow as pa
    from feast.utils import _convert_arrow_to_proto

    join_keys = {column.name: column.dtype.to_value_type() for column in view.entity_columns}
    provider.online_store.online_write_batch(
        cluster.config, view, _convert_arrow_to_proto(pa.Table.from_pandas(frame), view, join_keys), None
    )
    assert dump_cluster(redis_cluster)[0] == dump_single(single)


def test_a_client_of_the_other_mode_is_refused(stores, redis_databases, cluster_url):  # noqa: F811
    single, cluster = stores
    with pytest.raises(TypeError, match="redis_type=redis_cluster but the client is a Redis: build both from the same"):
        OnlineWriter(cluster, redis.Redis.from_url(redis_databases.fresh()))
    with pytest.raises(TypeError, match="redis_type=redis but the client is a RedisCluster"):
        OnlineWriter(single, redis_client(cluster_url))


def test_feast_keys_spread_over_every_master(stores, redis_cluster):  # noqa: F811
    _, cluster = stores
    OnlineWriter(cluster).write("user_profile_fv", many_users(3000))
    _, per_master = dump_cluster(redis_cluster)
    assert len(per_master) == 3 and sum(per_master.values()) == 3000
    assert min(per_master.values()) > 800  # slots are split evenly: no master takes most users
    assert len({slot(b"user" + bytes([i])) for i in range(50)}) > 40  # (slot() itself spreads keys)
