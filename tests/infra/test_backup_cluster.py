"""infra.backup on a real Redis Cluster: keys of every kind the deployment keeps (Feast hashes with binary keys,
tiles, strings with a TTL, caps zsets, the decision stream with a consumer group and pending entries) spread over all
16384 slots' masters are backed up, flushed and restored, into the same cluster and into a new one of four masters
(another node→slot layout), and read back the same: every key, its type, its value, its TTL. The manifest records
each master with its slots and key count; a restore refuses a cluster holding keys (counted over every master)."""

from __future__ import annotations

import base64
import gzip
import json
import shutil

import pytest
from redis.cluster import RedisCluster

from infra import backup
from infra.erasure.subject import entity_key
from infra.keys import Pseudonymizer
from infra.redis_cluster import cluster_topology, node_connection, redis_client, slot
from infra.redis_cluster_server import LocalRedisCluster
from infra.settings import HyperliftSettings
from tests.infra.redis_cluster import cluster_url, master_contents, redis_cluster  # noqa: F401

pytestmark = pytest.mark.redis_cluster

STREAM = "hyperlift:decisions"
TTL_MS = 3_600_000
DOOR = Pseudonymizer("b4" * 32, 1)  # Redis keys users by their pseudonym (feature_repo/pseudonyms.py)


def seed(client: RedisCluster) -> dict[bytes, int]:
    """What one server's backup covers, on the cluster: 200 Feast rows (binary keys, no hash tag), tiles and seen
    markers (tags of the users' pseudonyms), caps zsets (user-key tags), budget counters with a TTL, the decision
    stream with a group that has read 3 entries and acknowledged 1, and an outcome claim on the stream's slot.
    {key: ttl ms or -1}."""
    ttls: dict[bytes, int] = {}
    pipe = client.pipeline(transaction=False)
    for user in range(200):
        row = entity_key(DOOR(user))
        pipe.hset(row, mapping={b"_ts:user_activity": bytes([user % 256, 1]), b"\x00\xffvisits": str(user)})
        ttls[row] = -1
    for user in range(60):
        lake_id = DOOR(user)
        tiles, seen = f"hyperlift:tiles:{{{lake_id}}}".encode(), f"hyperlift:seen:{{{lake_id}}}:ev-{user}".encode()
        caps = f"hyperlift:caps:{{{user:032x}}}:daily".encode()
        pipe.hset(tiles, mapping={"2026-12-01": user, "2026-12-02": user * 2})
        pipe.set(seen, b"1", px=TTL_MS)
        pipe.zadd(caps, {f"d-{user}-{n}": n * 1.5 for n in range(3)})
        ttls |= {tiles: -1, seen: TTL_MS, caps: -1}
    for campaign in range(12):
        budget = f"hyperlift:budget:{{camp-{campaign}:2026-12-07}}".encode()
        pipe.set(budget, campaign * 100, px=TTL_MS)
        ttls[budget] = TTL_MS
    pipe.execute()
    for n in range(10):
        client.xadd(STREAM, {"record": json.dumps({"decision_id": f"d{n}", "user_key": f"{n:032x}"})})
    client.xgroup_create(STREAM, "lake", id="0")
    read = client.xreadgroup("lake", "drain", {STREAM: ">"}, count=3)
    client.xack(STREAM, "lake", read[0][1][0][0])
    claim = b"{hyperlift:outcomes}:idempotency:o-1"
    client.hset(claim, mapping={"outcome_id": "o-1"})
    ttls |= {STREAM.encode(): -1, claim: -1}
    return ttls


def state(client: RedisCluster) -> dict[bytes, tuple]:
    """{key: (type, value, has a TTL)} of every key on every master, streams with their pending entries."""
    return master_contents(client, with_pending=True, with_ttl=True)


def keys_per_master(client: RedisCluster) -> dict[str, int]:
    return {n.name: node_connection(client, n).dbsize() for n in cluster_topology(client) if n.role == "master"}


def test_a_cluster_comes_back_from_its_backup_key_for_key(cluster_url, redis_cluster, tmp_path):  # noqa: F811
    client = redis_client(cluster_url)
    ttls = seed(client)
    expected = state(client)
    assert set(expected) == set(ttls) and {k: v[2] for k, v in expected.items()} == {k: t > 0 for k, t in ttls.items()}
    per_master = keys_per_master(client)
    assert len(per_master) == 3 and all(n > 50 for n in per_master.values())  # spread over every master

    masters = backup.backup_redis_cluster(cluster_url, tmp_path / "redis.jsonl.gz")
    ranges = {n.name: [list(r) for r in n.slots] for n in cluster_topology(client) if n.role == "master"}
    assert masters == [{"node": name, "slots": ranges[name], "keys": per_master[name]} for name in ranges]
    assert [m["slots"] for m in masters] == [[[0, 5460]], [[5461, 10922]], [[10923, 16383]]]
    for master in masters:  # each master's count is the keys whose slot it serves
        (first, last), = master["slots"]
        assert master["keys"] == sum(first <= slot(k) <= last for k in ttls)
    with gzip.open(tmp_path / "redis.jsonl.gz", "rt") as lines:
        assert sorted(json.loads(line)["key"] for line in lines) == sorted(
            base64.b64encode(k).decode() for k in ttls)
    assert backup.backup_redis(cluster_url, tmp_path / "again.jsonl.gz") == len(ttls)

    with pytest.raises(backup.BackupError, match=rf"holds {len(ttls)} key\(s\); restore into an empty database"):
        backup.restore_redis(cluster_url, tmp_path / "redis.jsonl.gz", replace=False)  # DBSIZE summed over masters
    redis_cluster.flush()
    assert state(client) == {}
    backup._check_empty_redis(cluster_url)
    assert backup.restore_redis(cluster_url, tmp_path / "redis.jsonl.gz", replace=False) == len(ttls)
    assert state(client) == expected
    assert keys_per_master(client) == per_master
    assert all(0 < client.pttl(k) <= TTL_MS for k, t in ttls.items() if t > 0)

    client.set("written-after-the-backup", b"1")
    assert backup.restore_redis(cluster_url, tmp_path / "redis.jsonl.gz", replace=True) == len(ttls)
    assert state(client) == expected
    client.close()


def test_a_backup_restores_into_a_cluster_of_another_shape(cluster_url, tmp_path):  # noqa: F811
    """Four masters, no replicas: other slot ranges, other nodes; the same keys and values, spread over all four."""
    client = redis_client(cluster_url)
    ttls = seed(client)
    expected = state(client)
    backup.backup_redis_cluster(cluster_url, tmp_path / "redis.jsonl.gz")
    client.close()
    with LocalRedisCluster(tmp_path / "other", masters=4, replicas=0) as other:
        target = redis_client(other.url)
        assert [list(n.slots) for n in cluster_topology(target)] == [
            [(0, 4095)], [(4096, 8191)], [(8192, 12287)], [(12288, 16383)]]
        assert backup.restore_redis(other.url, tmp_path / "redis.jsonl.gz", replace=False) == len(ttls)
        assert state(target) == expected
        counts = keys_per_master(target)
        assert len(counts) == 4 and sum(counts.values()) == len(ttls) and min(counts.values()) > 40
        target.close()


def test_create_and_restore_a_deployment_on_a_cluster(cluster_url, redis_cluster, tmp_path):  # noqa: F811
    """`python -m infra.backup create/restore` with REDIS_URL=redis+cluster://: the manifest lists each master with
    its slots and key count; a restore into the cluster while it holds keys is refused before any file is written;
    into the flushed cluster, the keys and the files come back."""
    home = tmp_path / "home"
    settings = HyperliftSettings(home=home, reports_dir=tmp_path / "reports", redis_url=cluster_url)
    client = redis_client(cluster_url)
    ttls = seed(client)
    expected = state(client)
    lake_file = settings.data_dir / "raw" / "events.parquet"
    lake_file.parent.mkdir(parents=True)
    lake_file.write_bytes(b"a lake file")
    manifest = backup.create(tmp_path / "backup", settings)
    entry = manifest["stores"]["redis"]
    assert entry["kind"] == "redis" and entry["keys"] == len(ttls)
    assert [(m["slots"], m["keys"]) for m in entry["cluster_masters"]] == [
        ([[0, 5460]], sum(slot(k) <= 5460 for k in ttls)),
        ([[5461, 10922]], sum(5461 <= slot(k) <= 10922 for k in ttls)),
        ([[10923, 16383]], sum(slot(k) >= 10923 for k in ttls)),
    ]
    shutil.rmtree(home)
    with pytest.raises(backup.BackupError, match=rf"Redis .* holds {len(ttls)} key\(s\); .*--replace"):
        backup.restore(tmp_path / "backup", settings)
    assert not settings.data_dir.exists() and not (home / "audit").exists()  # refused before any file was restored
    redis_cluster.flush()
    backup.restore(tmp_path / "backup", settings)
    assert state(client) == expected
    assert lake_file.read_bytes() == b"a lake file"
    client.close()
