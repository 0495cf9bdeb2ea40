"""Keyed erasure on a real Redis Cluster (three masters, three replicas): one user's keys spread over every master
(the Feast row, tiles, seen markers and consent by the user's pseudonym; caps by user key; an idempotency claim) and
records in all four streams, next to other users'. After `erase_redis` and `persist` no master holds a key or a
value naming the user (by raw id or pseudonym), everyone else's keys are byte for byte what they were (their
stream entries too, in order, with their ids), the consumer groups are back, and every node, replicas included,
rewrote its append-only file and its snapshot (INFO persistence: two more forks, status ok; new files that no longer
hold the user's bytes), each named in the receipt."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from infra.erasure import redis_store
from infra.erasure.anonymise import Anonymiser
from infra.erasure.receipt import StoreReport
from infra.erasure.subject import Subject, entity_key
from infra.keys import Pseudonymizer
from infra.redis_cluster import NodeRole, cluster_topology, node_connection, redis_client
from infra.redis_cluster_server import LocalRedisCluster
from serving.store.outcomes import claim_key
from tests.infra.redis_cluster import cluster_url, master_contents, redis_cluster  # noqa: F401

pytestmark = pytest.mark.redis_cluster

SALT = "cluster-erasure-test-salt"
DOOR = Pseudonymizer("5e" * 32, 1)
"""The pseudonym key Redis is keyed by in these tests (the procedure's test uses its home's key file instead)."""
OTHERS = (7, 11, 12345)
DECISIONS, OUTCOMES, QUARANTINE, CONSENT = redis_store.STREAMS


def subject_of(user: int, door: Pseudonymizer = DOOR) -> Subject:
    """The user as the stores know them: raw id, user key under SALT, pseudonym under `door`."""
    return Subject.of(user, SALT, pseudonymizers=(door,))


def lake_tag(subject: Subject) -> str:
    """`{<pseudonym>}`: the hash tag of the user's keys below the door (tiles, seen markers, consent)."""
    (lake_id,) = subject.lake_ids
    return f"{{{lake_id}}}"


def user_keys_of(subject: Subject, label: str = "u") -> dict[bytes, tuple[str, object]]:
    """{key: (type, value)} of everything the project keeps under one user's name (redis_store's list): by the
    user's pseudonym, the user key, and (the idempotency claim, an outcome as sent) the raw id; `label` names their
    outcome (its idempotency claim)."""
    tag = lake_tag(subject)
    (lake_id,) = subject.lake_ids
    return {
        entity_key(lake_id): ("hash", {b"_ts:user_activity": b"\x08\x01", b"a1b2": f"{lake_id}".encode()}),
        f"hyperlift:tiles:{tag}".encode(): ("hash", {b"2026-12-01": b"3", b"2026-12-02": b"5"}),
        f"hyperlift:seen:{tag}:ev-1".encode(): ("string", b"1"),
        f"hyperlift:seen:{tag}:ev-2".encode(): ("string", b"1"),
        f"hyperlift:consent:{tag}".encode(): ("hash", {b"granted": b"1", b"ts": b"17"}),
        f"hyperlift:caps:{{{subject.user_key}}}:daily".encode(): ("zset", [(b"d-1", 1.0), (b"d-2", 2.0)]),
        f"hyperlift:item_caps:{{{subject.user_key}}}:item-3".encode(): ("string", b"2"),
        claim_key(OUTCOMES, f"o-{label}").encode(): ("hash", {b"user_id": str(subject.user_id).encode()}),
    }


def records_of(subject: Subject, label: str = "u") -> dict[str, list[dict]]:
    """The user's stream records: two decisions, an outcome, a refused event (raw id, as text: as received) and a
    consent call (by pseudonym, as the consent route records it); their ids carry `label`, not the user id (an
    anonymised decision keeps its id)."""
    ukey = subject.user_key
    (lake_id,) = subject.lake_ids
    return {
        DECISIONS: [{"decision_id": f"d-{label}-{n}", "ts": 1.0 + n, "surface": "home", "user_key": ukey,
                     "context_hash": f"ctx-{label}", "features": {"visits": 3.0}, "masked_features": ["age"]}
                    for n in (1, 2)],
        OUTCOMES: [{"outcome_id": f"o-{label}", "decision_id": f"d-{label}-1", "user_key": ukey, "revenue": 12.5}],
        QUARANTINE: [{"quarantine_id": f"q-{label}", "rule": "unknown_event_type",
                      "event": json.dumps({"event_type": "teleport", "user_id": str(subject.user_id)})}],
        CONSENT: [{"event_id": f"c-{label}", "user_id": lake_id, "user_key": ukey, "granted": False}],
    }


def seed(client: RedisCluster, subjects: list[Subject]) -> None:
    """Every subject's keys (the first is labelled `u`, the others `o0`, `o1`, ...), then their stream records
    interleaved (user by user per stream), and a consumer group `lake` on each stream that has read the first three
    entries and acknowledged the first."""
    labels = ["u", *(f"o{n}" for n in range(len(subjects) - 1))]
    for subject, label in zip(subjects, labels):
        for key, (kind, value) in user_keys_of(subject, label).items():
            if kind == "hash":
                client.hset(key, mapping=value)
            elif kind == "string":
                client.set(key, value)
            else:
                client.zadd(key, dict(value))
    for stream in redis_store.STREAMS:
        for n in range(2):
            for subject, label in zip(subjects, labels):
                for record in records_of(subject, label)[stream][n:n + 1]:
                    client.xadd(stream, {"record": json.dumps(record), "v": "1"})
        client.xgroup_create(stream, "lake", id="0")
        read = client.xreadgroup("lake", "drain", {stream: ">"}, count=3)
        client.xack(stream, "lake", read[0][1][0][0])


def spread_subject(cluster: LocalRedisCluster, door: Pseudonymizer = DOOR) -> Subject:
    """A user whose keys sit on all three masters (the Feast row, the pseudonym tag and the user-key tag each hash
    to a slot of their own), so the erasure has to reach every one."""
    masters = set(cluster.master_ports())
    for user in range(900_000, 901_000):
        subject = subject_of(user, door)
        ports = {cluster.master_of(key).port for key in user_keys_of(subject)}
        if ports == masters:
            return subject
    raise AssertionError("no user in 900000..900999 has keys on every master")


def settled_topology(client: RedisCluster) -> list[NodeRole]:
    """The cluster's nodes once the seed node sees three masters and three replicas (right after `--cluster create`
    gossip may not have told it every node's role yet)."""
    deadline = time.monotonic() + 30
    while True:
        nodes = cluster_topology(client)
        if [n.role for n in nodes] == ["master"] * 3 + ["replica"] * 3:
            return nodes
        assert time.monotonic() < deadline, f"the seed node never saw 3 masters and 3 replicas: {nodes}"
        time.sleep(0.1)


def naming(subject: Subject) -> list[bytes]:
    """Regular expressions of the user's traces in keys, values and files: user key, Feast entity key, `{id}` tag,
    the id as a JSON user_id (number or text, in a JSON string too), each by the raw id and by the pseudonym, and
    the ids of the records that go (the refused event, the consent call; anonymised decisions and outcomes keep
    theirs)."""
    patterns = [re.escape(subject.user_key.encode()), rb"[cq]-u\b"]
    for uid in (str(i).encode() for i in subject.ids):
        patterns += [re.escape(entity_key(int(uid))), rb"\{" + uid + rb"\}",
                     rb"\"user_id\\?\"\s*:\s*\\?\"?" + uid + rb"(?![0-9])"]
    return patterns


def traces(data: bytes, subject: Subject) -> list[bytes]:
    return [p for p in naming(subject) if re.search(p, data)]


@pytest.fixture
def persistent_cluster(redis_cluster: LocalRedisCluster, cluster_url: str) -> Iterator[str]:  # noqa: F811
    """The shared cluster, flushed, with every node keeping an append-only file and snapshots, uncompressed (so
    their bytes can be searched); put back to no persistence afterwards."""
    nodes = [n.client(10.0) for n in redis_cluster.nodes]
    try:
        for node in nodes:
            node.config_set("rdbcompression", "no")
            node.config_set("save", "3600 1")
            node.config_set("appendonly", "yes")  # starts a rewrite: the file holds the (empty) dataset
        for node in nodes:
            redis_store._wait_idle(node, 60)
        yield cluster_url
    finally:
        for node in nodes:
            redis_store._wait_idle(node, 60)
            node.config_set("appendonly", "no")
            node.config_set("save", "")
            node.config_set("rdbcompression", "yes")
            node.close()


def node_files(client: RedisCluster) -> dict[str, tuple[Path, Path]]:
    """{node name: (append-only file, snapshot)} of every node, from its own CONFIG."""
    out = {}
    for node in cluster_topology(client):
        own = node_connection(client, node)
        folder = Path(own.config_get("dir")["dir"])
        out[node.name] = (folder / own.config_get("appendfilename")["appendfilename"],
                          folder / own.config_get("dbfilename")["dbfilename"])
    return out


def test_a_user_is_erased_from_every_master_and_every_nodes_files(persistent_cluster, redis_cluster,  # noqa: F811
                                                                  tmp_path):
    client = redis_client(persistent_cluster)
    subject = spread_subject(redis_cluster)
    others = [subject_of(u) for u in OTHERS]
    seed(client, [subject, *others])
    nodes = settled_topology(client)
    files = node_files(client)
    for node in nodes:  # what the writes left in each node's files (replicas' too), before any rewrite
        redis_store._wait_idle(node_connection(client, node), 60)
        node_connection(client, node).bgsave()
    for node in nodes:
        redis_store._wait_idle(node_connection(client, node), 60)

    before = master_contents(client)
    theirs = set(user_keys_of(subject))
    assert theirs <= set(before) and len({redis_cluster.master_of(k).port for k in theirs}) == 3
    claim = claim_key(OUTCOMES, "o-u").encode()  # found through the outcome stream, not by name: not exported
    assert set(redis_store.export_keys(client, subject)) == {redis_store._readable(k) for k in theirs - {claim}}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # appendfsync everysec: the appended writes reach the files within a second
        held = {name: [bool(traces(p.read_bytes(), subject)) for p in pair] for name, pair in files.items()}
        if all(all(v) for v in held.values()):
            break
        time.sleep(0.1)
    assert held == {name: [True, True] for name in files}, "every node's files hold the user before the erasure"
    stats = {n.name: (node_connection(client, n).info("stats")["total_forks"],
                      [os.stat(p).st_ino for p in files[n.name]]) for n in nodes}

    redis_report, files_report = StoreReport("redis"), StoreReport("redis_files")
    redis_store.erase_redis(client, subject, Anonymiser(), redis_report)
    redis_store.persist(client, files_report, tmp_path)

    # Exactly the user's keys went; every entry of the user was removed or anonymised.
    assert (redis_report.keys_deleted, redis_report.entries_removed, redis_report.entries_anonymised) == (8, 2, 3)
    after = master_contents(client)
    assert set(after) == set(before) - theirs
    for key, (kind, value) in after.items():
        assert not traces(key, subject), key
        assert not traces(repr(value).encode(), subject), (key, value)
        if kind != "stream":
            assert (kind, value) == before[key], key
    # Others' stream entries: the same ids, the same fields, in order; the user's decisions and outcome anonymised
    # in place (same ids), their refused event and consent call gone; the groups back, pending entries redelivered.
    def of_others(entries: list) -> list:
        return [(i, f) for i, f in entries if any(o.owns_record(json.loads(f[b"record"])) for o in others)]

    for stream in redis_store.STREAMS:
        old_entries, old_groups = before[stream.encode()][1]
        new_entries, new_groups = after[stream.encode()][1]
        assert of_others(new_entries) == of_others(old_entries), stream
        kept = {i for i, _ in new_entries}
        user_ids = [i for i, f in old_entries if subject.owns_record(json.loads(f[b"record"]))]
        if stream in (DECISIONS, OUTCOMES):
            assert set(user_ids) <= kept and len(new_entries) == len(old_entries)
            for i, fields in new_entries:
                record = json.loads(fields[b"record"])
                if i in user_ids:
                    assert record["user_key"] not in subject.user_keys and record.get("features") is None
        else:
            assert kept == {i for i, _ in old_entries} - set(user_ids) and len(user_ids) == 1
        # read 3, acked 1: entries 2 and 3 pending, so the group restarts after entry 1 and redelivers them
        assert old_groups == [(b"lake", old_entries[2][0], 2)]
        assert new_groups == [(b"lake", old_entries[0][0], 0)]
    assert not client.exists(*[f"{{{s}}}:erasure-copy" for s in redis_store.STREAMS])

    # Every node (masters and replicas) rewrote both files from memory: two forks, status ok, new files (renamed
    # over the old ones) that no longer hold the user, and the receipt names each file and each node's outcome.
    for node in nodes:
        own = node_connection(client, node)
        persistence = own.info("persistence")
        assert (persistence["aof_last_bgrewrite_status"], persistence["rdb_last_bgsave_status"]) == ("ok", "ok")
        forks, inodes = stats[node.name]
        assert own.info("stats")["total_forks"] == forks + 2, node.name
        assert all(os.stat(p).st_ino != ino for p, ino in zip(files[node.name], inodes)), node.name
        owner = redis_cluster.master_of(f"hyperlift:tiles:{lake_tag(others[0])}").port
        serves = node.port == owner or own.info("replication").get("master_port") == owner
        for path in files[node.name]:
            data = path.read_bytes()
            assert traces(data, subject) == [], (node.name, path.name)
            # the files' bytes are searchable: another user's tiles are in those of their master and its replica
            assert (f"hyperlift:tiles:{lake_tag(others[0])}".encode() in data) == serves, (node.name, path.name)
    assert files_report.files_rewritten == [f"{n.name}:{p}" for n in nodes for p in files[n.name]]
    assert files_report.notes == [f"{n.describe()}: BGREWRITEAOF ok, BGSAVE ok" for n in nodes]
    assert [n.describe() for n in nodes][:3] == [
        f"{n.name} (master, slots {a}-{b})" for n, (a, b) in zip(nodes, [(0, 5460), (5461, 10922), (10923, 16383)])]
    client.close()


def test_a_second_erasure_finds_nothing_and_rewrites_the_files_again(persistent_cluster, redis_cluster,  # noqa: F811
                                                                     tmp_path):
    """Idempotent: run again at once (same second as the first snapshot), nothing is deleted and every node still
    rewrites and reports its files (the wait does not hinge on the last-save time moving)."""
    client = redis_client(persistent_cluster)
    subject = spread_subject(redis_cluster)
    seed(client, [subject, subject_of(OTHERS[0])])
    for _ in range(2):
        redis_report, files_report = StoreReport("redis"), StoreReport("redis_files")
        redis_store.erase_redis(client, subject, Anonymiser(), redis_report)
        started = time.monotonic()
        redis_store.persist(client, files_report, tmp_path, timeout_s=30)
        assert time.monotonic() - started < 10
        assert len(files_report.files_rewritten) == 12 and len(files_report.notes) == 6
    assert (redis_report.keys_deleted, redis_report.entries_removed, redis_report.entries_anonymised) == (0, 0, 0)
    client.close()


def test_a_node_that_is_down_fails_the_erasure_after_the_others_are_rewritten(tmp_path):
    """A replica killed before the rewrite: the five live nodes rewrite their files, the receipt says which node was
    not reached, and the erasure raises (so it is marked incomplete and run again once the node is back)."""
    with LocalRedisCluster(tmp_path / "cluster") as cluster:
        client = redis_client(cluster.url)
        for node in cluster.nodes:
            own = node.client(10.0)
            own.config_set("save", "3600 1")
            own.close()
        replica = next(n for n in settled_topology(client) if n.role == "replica")
        victim = next(n for n in cluster.nodes if n.port == replica.port)
        victim.kill()
        deadline = time.monotonic() + 30
        while not next(n for n in cluster_topology(client) if n.port == replica.port).failed:
            assert time.monotonic() < deadline, "the cluster never marked the killed replica failed"
            time.sleep(0.1)
        report = StoreReport("redis_files")
        with pytest.raises(RuntimeError, match=rf"1 of 6 cluster node\(s\) .*{replica.name} \(replica\): marked "
                                               r"failed.*run the erasure again"):
            redis_store.persist(client, report, tmp_path, timeout_s=30)
        live = [n for n in cluster_topology(client) if n.port != replica.port]
        assert sorted(report.files_rewritten) == sorted(
            f"{n.name}:{cluster.workdir / f'node-{n.port}' / 'dump.rdb'}" for n in live)
        assert f"{replica.name} (replica): down, files not rewritten" in report.notes
        client.close()


def test_the_erasure_procedure_runs_on_a_cluster_url(persistent_cluster, redis_cluster, tmp_path):  # noqa: F811
    """`erase` (make erase, the admin API, erasure_job) given REDIS_URL=redis+cluster://: it drains the streams into
    the lake, erases there and in Redis, and the receipt's redis_files report names all six nodes."""
    from feature_repo.pseudonyms import lake_pseudonymizer
    from infra import keys
    from infra.audit import AuditLog
    from infra.erasure.procedure import Target, erase
    from infra.settings import HyperliftSettings

    home = tmp_path / "home"
    settings = HyperliftSettings(home=home, reports_dir=home / "reports")
    door = lake_pseudonymizer(path=keys.key_file(settings))  # the home's key: the one the procedure reads
    client = redis_client(persistent_cluster)
    subject = spread_subject(redis_cluster, door)
    other = subject_of(OTHERS[0], door)
    seed(client, [subject, other])
    target = Target(settings, persistent_cluster, SALT, home / "serving" / "decision_wal", former_salts=())
    receipt = erase(subject.user_id, target, actor="test", audit=AuditLog(tmp_path / "audit"))
    assert receipt.complete and receipt.error == ""
    reports = {r.store: r for r in receipt.stores}
    assert (reports["redis"].keys_deleted, reports["redis"].entries_removed, reports["redis"].entries_anonymised) == (
        8, 2, 3)
    nodes = settled_topology(client)
    assert reports["redis_files"].notes == [f"{n.describe()}: BGREWRITEAOF ok, BGSAVE ok" for n in nodes]
    assert len(reports["redis_files"].files_rewritten) == 12
    remaining, kept = master_contents(client), user_keys_of(other, "o0")
    assert set(remaining) == set(kept) | {stream.encode() for stream in redis_store.STREAMS}
    assert {key: remaining[key] for key in kept} == kept  # the other user's keys, values as seeded
    for stream in redis_store.STREAMS:
        _, (entries, _groups) = remaining[stream.encode()]
        assert not any(traces(fields[b"record"], subject) for _, fields in entries), stream
    client.close()


def test_retention_trims_streams_on_the_cluster(cluster_url):
    """Stream retention on a cluster URL: each stream is trimmed to the period, never past the drain's delivery."""
    from infra.erasure.retention import trim_streams
    from serving.store.decision_log import DRAIN_GROUP

    client = redis_client(cluster_url)
    day_ms = 86_400_000
    now_ms = int(time.time() * 1000)
    for stream in ("hyperlift:decisions", "hyperlift:outcomes"):
        for i, ms in enumerate([now_ms - 9 * day_ms, now_ms - 9 * day_ms + 1, now_ms - day_ms]):
            client.xadd(stream, {"record": json.dumps({"i": i})}, id=f"{ms}-0")
        client.xgroup_create(stream, DRAIN_GROUP, id="0")
    client.xreadgroup(DRAIN_GROUP, "dagster", {"hyperlift:decisions": ">"}, count=3)
    client.xack("hyperlift:decisions", DRAIN_GROUP, *[i for i, _ in client.xrange("hyperlift:decisions")])
    client.xreadgroup(DRAIN_GROUP, "dagster", {"hyperlift:outcomes": ">"}, count=1)  # delivered, still pending
    trimmed = trim_streams(client, 7, time.time(), dry_run=False)
    assert trimmed == {"hyperlift:decisions": 2, "hyperlift:outcomes": 0}
    assert client.xlen("hyperlift:decisions") == 1 and client.xlen("hyperlift:outcomes") == 3
    client.close()
