"""infra/rekey.py: after a rotation of the pseudonym key, every lake row below the door and every Redis key of a
user holds the new pseudonym of the user's raw id; the raw layer is untouched, pseudonyms no raw id maps are left
and counted, a destination key that exists is kept, and the job is idempotent and finishes after a crash."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import redis

from infra import keys, rekey
from infra.audit import AuditLog
from infra.keys import PSEUDONYM
from infra.redis_cluster import redis_client, slot
from infra.settings import HyperliftSettings
from tests.infra.redis_cluster import cluster_url, redis_cluster  # noqa: F401

CUSTOMERS = [4_000_000_001 + i for i in range(6)]
EVENT_ONLY = 4_000_000_101  # a raw id only raw/events knows
GONE = 4_000_000_999  # a user whose raw rows retention deleted: the lake still holds its old pseudonym
TTL_S = 3_600
ACTOR = "cli:test"


@pytest.fixture
def home(settings, tmp_path, monkeypatch) -> HyperliftSettings:
    """The test's home as HYPERLIFT_HOME, its own key file (outside the lake) with pseudonym version 1."""
    monkeypatch.setenv("HYPERLIFT_HOME", str(settings.home))
    monkeypatch.setenv(keys.KEYS_FILE_ENV, str(tmp_path / "secrets" / "keys.json"))
    for name in ("HYPERLIFT_AUDIT_DIR", "REDIS_URL", keys.TRACE_SALT_ENV):
        monkeypatch.delenv(name, raising=False)
    keys.pseudonymizers(create=True)
    return settings


def old_p() -> keys.Pseudonymizer:
    """Version 1 (before the rotation: current; after it: the newest retired one)."""
    return next(p for p in keys.pseudonymizers() if p.version == 1)


def new_p() -> keys.Pseudonymizer:
    return keys.pseudonymizers()[0]


def rotate() -> None:
    keys.rotate(PSEUDONYM, ACTOR, "test")


def write(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)


def seed_lake(data: Path) -> dict[str, list]:
    """The raw layer (raw ids), rows as received (raw ids) and the lake below the door keyed by version 1; returns
    {relative path: raw id per row (None: null id, GONE: the user no raw row names)} of the files below the door."""
    p = old_p()
    write(data / "raw" / "customers.parquet",
          pd.DataFrame({"user_id": CUSTOMERS, "region": ["eu", "us", "eu", "us", "eu", "apac"]}))
    raw_events = CUSTOMERS[:3] + [EVENT_ONLY]
    write(data / "raw" / "events" / "date=2026-12-01" / "part-0.parquet",
          pd.DataFrame({"event_id": [f"e{i}" for i in range(4)], "user_id": raw_events,
                        "price": [1.5, 2.0, 3.25, 4.0]}))
    write(data / "raw" / "events" / "date=2026-12-02" / "part-0.parquet",
          pd.DataFrame({"event_id": ["e9", "e10"], "user_id": pd.array([CUSTOMERS[4], None], dtype="Int64")}))
    write(data / "quarantine" / "date=2026-12-01" / "part-0.parquet",
          pd.DataFrame({"event_id": ["q1"], "user_id": [CUSTOMERS[0]], "rule": ["price_negative"]}))
    write(data / "imports" / "landing" / "batch.parquet", pd.DataFrame({"user_id": [CUSTOMERS[1]]}))

    below: dict[str, list] = {
        "validated/date=2026-12-01/part-0.parquet": [CUSTOMERS[0], CUSTOMERS[1], EVENT_ONLY, None, GONE, CUSTOMERS[0]],
        "features/user_activity/part-0.parquet": CUSTOMERS + [EVENT_ONLY],
        "consent/date=2026-12-01/consent.parquet": [CUSTOMERS[2], GONE],
        "training/sets/only_gone.parquet": [GONE, GONE],
    }
    for relative, raw_ids in below.items():
        n = len(raw_ids)
        ids = pd.array([None if r is None else p(r) for r in raw_ids], dtype="Int64")
        write(data / relative, pd.DataFrame({
            "event_id": [f"v{i}" for i in range(n)], "user_id": ids,
            "ts": pd.date_range("2026-12-01", periods=n, freq="h", tz="UTC"),
            "score": np.linspace(0.0, 1.0, n), "tags": [["a", str(i)] for i in range(n)],
        }))
    # an id kept as received text, and a table without users: not integer user ids, not touched
    write(data / "rejected_rows" / "text.parquet", pd.DataFrame({"user_id": [str(p(CUSTOMERS[0]))]}))
    write(data / "items" / "catalog.parquet", pd.DataFrame({"item_id": [1, 2]}))
    return below


def untouched(data: Path) -> dict[str, bytes]:
    """The bytes of every file the re-key must leave alone (raw layer, rows as received, non-integer ids)."""
    return {str(f.relative_to(data)): f.read_bytes() for f in sorted(data.rglob("*.parquet"))
            if f.relative_to(data).parts[0] in ("raw", "quarantine", "imports", "rejected_rows", "items")}


def lake_state(data: Path) -> dict[str, tuple]:
    """{relative path: (schema with metadata, table)} of every parquet file."""
    state = {}
    for path in sorted(data.rglob("*.parquet")):
        table = pq.ParquetFile(path).read()
        state[str(path.relative_to(data))] = (table.schema.to_string(show_schema_metadata=True), table.to_pydict())
    return state


def test_the_lake_below_the_door_holds_the_new_pseudonyms_and_the_raw_layer_is_untouched(home):
    data = home.data_dir
    below = seed_lake(data)
    before_bytes, before = untouched(data), lake_state(data)
    old = old_p()
    rotate()
    new = new_p()
    assert new.version == 2 and old.version == 1

    report = rekey.rekey(actor=ACTOR, progress=False)

    for relative, raw_ids in below.items():
        table = pq.ParquetFile(data / relative).read()
        expected = [None if r is None else old(r) if r == GONE else new(r) for r in raw_ids]
        assert table.column("user_id").to_pylist() == expected, relative
        # every other column, the column order and types, the pandas metadata: as they were
        schema, columns = before[relative]
        assert table.schema.to_string(show_schema_metadata=True) == schema
        assert {k: v for k, v in table.to_pydict().items() if k != "user_id"} == {
            k: v for k, v in columns.items() if k != "user_id"}
    assert untouched(data) == before_bytes
    assert not [f for f in data.rglob("*") if f.name.startswith(".")]  # no temp file left
    assert report == rekey.RekeyReport(
        from_version=1, to_version=2, raw_ids=7, lake_files=4, files_rewritten=3,
        rows_rekeyed=4 + 7 + 1, rows_current=0, rows_left=1 + 1 + 2, redis=False, seconds=report.seconds)
    # the file where nothing maps is not rewritten
    assert lake_state(data)["training/sets/only_gone.parquet"] == before["training/sets/only_gone.parquet"]


def test_the_map_covers_customers_and_event_only_users_and_reads_only_the_raw_layer(home):
    seed_lake(home.data_dir)
    assert rekey.raw_user_ids(home.data_dir).tolist() == sorted(CUSTOMERS + [EVENT_ONLY])
    rotate()
    old, new = rekey.choose_versions()
    pmap = rekey.PseudonymMap.build(rekey.raw_user_ids(home.data_dir), old, new)
    hit, mapped = pmap.lookup(np.array([old(CUSTOMERS[3]), old(GONE), new(CUSTOMERS[3])], dtype=np.int64))
    assert hit.tolist() == [True, False, False]
    assert mapped.tolist() == [new(CUSTOMERS[3]), old(GONE), new(CUSTOMERS[3])]
    assert pmap.is_new(np.array([new(EVENT_ONLY), old(EVENT_ONLY)], dtype=np.int64)).tolist() == [True, False]


def test_a_second_run_changes_nothing(home):
    seed_lake(home.data_dir)
    rotate()
    rekey.rekey(actor=ACTOR, progress=False)
    files = {f: f.read_bytes() for f in sorted(home.data_dir.rglob("*.parquet"))}
    mtimes = {f: f.stat().st_mtime_ns for f in files}

    again = rekey.rekey(actor=ACTOR, progress=False)

    assert {f: f.read_bytes() for f in files} == files and {f: f.stat().st_mtime_ns for f in files} == mtimes
    assert (again.files_rewritten, again.rows_rekeyed, again.rows_current, again.rows_left) == (0, 0, 12, 4)


def test_a_run_that_fails_after_the_first_file_is_finished_by_the_next(home, tmp_path, monkeypatch):
    seed_lake(home.data_dir)
    rotate()
    clean = HyperliftSettings(home=tmp_path / "clean", reports_dir=tmp_path / "clean" / "reports")
    shutil.copytree(home.data_dir, clean.data_dir)
    rekey.rekey(clean, actor=ACTOR, progress=False)

    real = rekey.write_atomically
    calls = []

    def crash_on_the_second(path, table):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("simulated crash")
        real(path, table)

    monkeypatch.setattr(rekey, "write_atomically", crash_on_the_second)
    with pytest.raises(OSError, match="simulated crash"):
        rekey.rekey(actor=ACTOR, progress=False)
    monkeypatch.setattr(rekey, "write_atomically", real)
    assert len(calls) == 2
    # the clean run's entry only: a run that fails records none
    assert [e["action"] for e in AuditLog(home.home / "audit").entries()].count("key.rekey") == 1

    finished = rekey.rekey(actor=ACTOR, progress=False)

    assert finished.files_rewritten == 2 and finished.rows_current == 1  # the first file (consent) was done
    assert lake_state(home.data_dir) == lake_state(clean.data_dir)


def test_the_audit_entry_holds_counts_and_no_id(home):
    seed_lake(home.data_dir)
    old = old_p()
    rotate()
    new = new_p()
    report = rekey.rekey(actor=ACTOR, reason="yearly", progress=False)
    (entry,) = [e for e in AuditLog(home.home / "audit").entries() if e["action"] == "key.rekey"]
    assert entry["actor"] == ACTOR and entry["target"] == "key:pseudonym" and entry["reason"] == "yearly"
    assert entry["details"] == report.counts()
    text = json.dumps(entry)
    for raw in CUSTOMERS + [EVENT_ONLY, GONE]:
        for shown in (raw, old(raw), new(raw)):
            assert str(shown) not in text


# ------------------------------------------------------------------------------------------------------------ redis


def redis_state(client) -> dict[bytes, tuple]:
    """{key: (type, value, ttl in whole minutes or -1)} of every key."""
    state = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        value = {"hash": client.hgetall, "zset": lambda k: client.zrange(k, 0, -1, withscores=True)}.get(
            kind, client.get)(key)
        ttl = client.pttl(key)
        state[key] = (kind, value, -1 if ttl == -1 else round(ttl / 60_000))
    return state


def seed_redis(client, p: keys.Pseudonymizer) -> None:
    """Users 0 and 1 with a Feast row, tiles, consent and seen markers (TTL, event ids with glob characters); user
    2 with tiles only; a seen marker of the user no raw row names; keys of other kinds."""
    for i in (0, 1):
        pid = p(CUSTOMERS[i])
        client.hset(rekey.entity_key(pid), mapping={b"_ts:user_activity_fv": b"\x08\x01", b"\x00\xffvisits": str(i)})
        client.hset(rekey.tiles_key(pid), mapping={"20423:views": 3 + i, "max_ts_us": 1_700_000_000_000_000})
        client.hset(rekey.consent_key(pid), mapping={"marketing": f"1:{i}:api"})
        client.set(rekey.seen_key(pid, f"ev-{i}"), 1, ex=TTL_S)
    client.set(rekey.seen_key(p(CUSTOMERS[0]), "odd[1]*?{x}"), 1, ex=TTL_S)
    client.hset(rekey.tiles_key(p(CUSTOMERS[2])), mapping={"20423:views": 9})
    client.set(rekey.seen_key(p(GONE), "ev-gone"), 1, ex=TTL_S)
    client.zadd("hyperlift:caps:{abc}:daily", {"d1": 1.0})
    client.set("hyperlift:budget:{camp}", 5)


def moved_expectation(before: dict, old: keys.Pseudonymizer, new: keys.Pseudonymizer) -> dict:
    """`before` with every key of a mapped user renamed to its new pseudonym."""
    renames = {}
    for raw in CUSTOMERS + [EVENT_ONLY]:
        o, n = old(raw), new(raw)
        renames[rekey.entity_key(o)] = rekey.entity_key(n)
        renames[rekey.tiles_key(o).encode()] = rekey.tiles_key(n).encode()
        renames[rekey.consent_key(o).encode()] = rekey.consent_key(n).encode()
        for key in before:
            prefix = rekey.seen_key(o, "").encode()
            if key.startswith(prefix):
                renames[key] = rekey.seen_key(n, "").encode() + key[len(prefix):]
    return {renames.get(k, k): v for k, v in before.items()}


def test_redis_keys_move_with_their_values_and_ttls(home, online_redis_url):
    seed_lake(home.data_dir)
    client = redis.Redis.from_url(online_redis_url)
    old = old_p()
    seed_redis(client, old)
    before = redis_state(client)
    rotate()
    new = new_p()

    report = rekey.rekey(redis_url=online_redis_url, actor=ACTOR, progress=False, batch_users=2)

    after = redis_state(client)
    assert after == moved_expectation(before, old, new)
    assert report.redis and report.redis_keys_moved == 2 * 3 + 3 + 1 and report.redis_conflicts == 0
    for i in (0, 1):
        assert client.hgetall(rekey.tiles_key(new(CUSTOMERS[i])))[b"20423:views"] == str(3 + i).encode()
        assert not client.exists(rekey.tiles_key(old(CUSTOMERS[i])), rekey.entity_key(old(CUSTOMERS[i])),
                                 rekey.consent_key(old(CUSTOMERS[i])), rekey.seen_key(old(CUSTOMERS[i]), f"ev-{i}"))
        assert client.pttl(rekey.entity_key(new(CUSTOMERS[i]))) == -1  # no TTL stays no TTL
        assert TTL_S * 1000 - 60_000 < client.pttl(rekey.seen_key(new(CUSTOMERS[i]), f"ev-{i}")) <= TTL_S * 1000
    assert client.get(rekey.seen_key(new(CUSTOMERS[0]), "odd[1]*?{x}")) == b"1"
    assert client.exists(rekey.seen_key(old(GONE), "ev-gone"))  # unmapped: left under the old version

    again = rekey.rekey(redis_url=online_redis_url, actor=ACTOR, progress=False)
    assert (again.redis_keys_moved, again.redis_conflicts) == (0, 0) and redis_state(client) == after


def test_an_existing_destination_is_kept_and_the_source_deleted(home, online_redis_url):
    seed_lake(home.data_dir)
    client = redis.Redis.from_url(online_redis_url)
    old = old_p()
    client.hset(rekey.tiles_key(old(CUSTOMERS[0])), mapping={"20423:views": 1})
    client.set(rekey.seen_key(old(CUSTOMERS[0]), "ev"), 1, ex=TTL_S)
    rotate()
    new = new_p()
    client.hset(rekey.tiles_key(new(CUSTOMERS[0])), mapping={"20423:views": 7})
    client.set(rekey.seen_key(new(CUSTOMERS[0]), "ev"), 2, ex=60)

    report = rekey.rekey(redis_url=online_redis_url, actor=ACTOR, progress=False)

    assert (report.redis_keys_moved, report.redis_conflicts) == (0, 2)
    assert client.hgetall(rekey.tiles_key(new(CUSTOMERS[0]))) == {b"20423:views": b"7"}
    assert client.get(rekey.seen_key(new(CUSTOMERS[0]), "ev")) == b"2"
    assert client.pttl(rekey.seen_key(new(CUSTOMERS[0]), "ev")) <= 60_000
    assert not client.exists(rekey.tiles_key(old(CUSTOMERS[0])), rekey.seen_key(old(CUSTOMERS[0]), "ev"))


def test_a_redis_run_that_fails_halfway_is_finished_by_the_next(home, redis_databases, monkeypatch):
    seed_lake(home.data_dir)
    crashed_url, clean_url = redis_databases.fresh(), redis_databases.fresh()
    crashed, clean = redis.Redis.from_url(crashed_url), redis.Redis.from_url(clean_url)
    seed_redis(crashed, old_p())
    seed_redis(clean, old_p())
    rotate()
    # the clean run, on the same lake (the lake part is then done for the crashed run too: Redis is what is tested)
    rekey.rekey(redis_url=clean_url, actor=ACTOR, progress=False, batch_users=1)

    real = rekey.move_keys
    calls = []

    def crash_on_the_second(client, pairs):
        present = [(s, d) for s, d in pairs if client.exists(s)]
        if present:
            calls.append(len(present))
        if len(calls) == 2:
            # the second user with keys: a crash between the copy and the delete of its first key (restored, the
            # source still there), its other keys not moved yet
            source, destination = present[0]
            client.restore(destination, 0, client.dump(source))
            raise redis.ConnectionError("simulated crash")
        return real(client, pairs)

    monkeypatch.setattr(rekey, "move_keys", crash_on_the_second)
    with pytest.raises(redis.ConnectionError, match="simulated crash"):
        rekey.rekey(redis_url=crashed_url, actor=ACTOR, progress=False, batch_users=1)
    monkeypatch.setattr(rekey, "move_keys", real)

    finished = rekey.rekey(redis_url=crashed_url, actor=ACTOR, progress=False, batch_users=1)

    assert redis_state(crashed) == redis_state(clean)
    assert finished.redis_conflicts == 1  # the key copied before the crash: its copy kept, its source deleted
    assert finished.redis_keys_moved == 10 - calls[0] - 1


# -------------------------------------------------------------------------------------------------------------- CLI


def test_the_cli_refuses_a_single_version_and_an_unknown_one(home, capsys):
    assert rekey.main([]) == 2
    assert "the pseudonym key has a single version (1): nothing to re-key" in capsys.readouterr().err
    rotate()
    assert rekey.main(["--from-version", "5"]) == 2
    assert "the pseudonym key has no version 5: its retired versions are [1], the current one 2" in (
        capsys.readouterr().err)
    assert rekey.main(["--from-version", "2"]) == 2
    assert "version 2 is the current pseudonym key" in capsys.readouterr().err
    assert not [e for e in AuditLog(home.home / "audit").entries() if e["action"] == "key.rekey"]


def test_the_cli_rekeys_the_lake_only_without_a_redis_url_and_prints_the_report(home, capsys):
    seed_lake(home.data_dir)
    rotate()
    assert rekey.main(["--reason", "yearly"]) == 0
    out, err = capsys.readouterr()
    assert "no Redis URL (--redis-url or REDIS_URL): re-keying the lake only" in err
    printed = json.loads(out)
    assert printed["redis"] is False and printed["files_rewritten"] == 3 and printed["rows_rekeyed"] == 12
    assert printed["from_version"] == 1 and printed["to_version"] == 2


def test_the_cli_rekeys_redis_from_redis_url(home, online_redis_url, monkeypatch, capsys):
    seed_lake(home.data_dir)
    client = redis.Redis.from_url(online_redis_url)
    old = old_p()
    seed_redis(client, old)
    rotate()
    rotate()  # version 3: the default re-keys from 2, which keyed nothing; version 1 is asked for by number
    monkeypatch.setenv("REDIS_URL", online_redis_url)
    assert rekey.main([]) == 0
    assert json.loads(capsys.readouterr().out)["rows_rekeyed"] == 0
    assert rekey.main(["--from-version", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["from_version"], printed["to_version"], printed["redis"]) == (1, 3, True)
    assert printed["redis_keys_moved"] == 10 and client.exists(rekey.tiles_key(new_p()(CUSTOMERS[2])))


# ---------------------------------------------------------------------------------------------------------- cluster


@pytest.mark.redis_cluster
def test_keys_move_across_slots_on_a_redis_cluster(home, cluster_url):  # noqa: F811
    seed_lake(home.data_dir)
    client = redis_client(cluster_url)
    old = old_p()
    seed_redis(client, old)
    before = redis_state(client)
    rotate()
    new = new_p()
    assert any(slot(rekey.tiles_key(old(r))) != slot(rekey.tiles_key(new(r))) for r in CUSTOMERS[:3])

    report = rekey.rekey(redis_url=cluster_url, actor=ACTOR, progress=False, batch_users=2)

    assert redis_state(client) == moved_expectation(before, old, new)
    assert (report.redis_keys_moved, report.redis_conflicts) == (10, 0)
    assert client.hgetall(rekey.consent_key(new(CUSTOMERS[1]))) == {b"marketing": b"1:1:api"}
    assert 0 < client.pttl(rekey.seen_key(new(CUSTOMERS[0]), "ev-0")) <= TTL_S * 1000
