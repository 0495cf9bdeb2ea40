import json
import tempfile
import uuid
from pathlib import Path

import pandas as pd
import pytest
import redis

from serving.store.trace import TraceWriter
from serving.store.decision_log import (
    DECISION_FORMAT,
    OUTCOME_FORMAT,
    StreamDrain,
    partition_dates,
    read_partition,
    read_partitions,
    stream_backlog,
)

STREAM, GROUP = "hyperlift:decisions", "lake"
DAY = "2026-03-01"
T0 = 1_772_323_200.0 + 12 * 3600  # 2026-03-01 12:00 UTC
MIDNIGHT = 1_772_409_600.0  # 2026-03-02 00:00 UTC


class Crash(RuntimeError):
    """The process dies here."""


def decision(i: int, ts: float = T0, **fields) -> dict:
    record = {
        "decision_id": uuid.UUID(int=i).hex, "ts": ts, "surface": "home", "region": "eu",
        "policy_version": "p1", "user_key": f"u{i % 7}", "context_hash": "c" * 32,
        "candidates": ["no_action", "push_reminder"], "scores": [None, 0.25], "probabilities": [0.1, 0.9],
        "chosen": ["push_reminder"], "chosen_probabilities": [0.9], "model_name": "hyperlift_uplift",
        "model_version": "3", "feature_service": "uplift_v1", "experiments": {"exp_a": "treatment"},
        "fallback": None, "latency_ms": {"features": 1.5, "total": 2.25},
    }
    return record | fields


@pytest.fixture
def client(online_redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(online_redis_url)


def append(client: redis.Redis, records: list[dict]) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="wal-") as wal_dir:  # the write-ahead file is not what these tests test
        writer = TraceWriter(client, STREAM, maxlen=100_000, wal_dir=Path(wal_dir))
        for record in records:
            writer.append(record)
        writer.close()
    assert writer.written == len(records) and writer.dropped == 0
    return [sid if isinstance(sid, str) else sid.decode() for sid, _ in client.xrange(STREAM)][-len(records):]


def drain(client: redis.Redis, root: Path, batch: int = 1000, consumer: str = "c1", **kwargs) -> StreamDrain:
    return StreamDrain(client, STREAM, GROUP, consumer, root, DECISION_FORMAT, batch=batch, **kwargs)


def fail_on_call(n: int):
    """A replacement that lets n-1 calls through to the original and raises on the n-th."""
    calls = []

    def wrap(original):
        def step(*args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                raise Crash("killed")
            return original(*args, **kwargs)
        return step
    return wrap


def pending(client: redis.Redis) -> int:
    return client.xpending(STREAM, GROUP)["pending"]


def test_every_record_lands_once_with_its_stream_id(client, tmp_path):
    records = [decision(i, T0 + i) for i in range(2503)]
    ids = append(client, records)
    result = drain(client, tmp_path).drain()
    assert (result.read, result.written, result.acked, result.rejected, result.missing) == (2503, 2503, 2503, 0, 0)
    assert [p.name for p in result.files] == [
        f"part-{ids[0]}-{ids[999]}.parquet", f"part-{ids[1000]}-{ids[1999]}.parquet",
        f"part-{ids[2000]}-{ids[2502]}.parquet",
    ]
    frame = read_partition(tmp_path, DAY)
    assert frame["stream_id"].tolist() == ids
    assert frame["decision_id"].tolist() == [r["decision_id"] for r in records]
    assert pending(client) == 0 and stream_backlog(client, STREAM, GROUP) == 0


def test_lists_stay_lists_and_dicts_become_json_text(client, tmp_path):
    append(client, [
        decision(1),
        decision(2, experiments={}, scores=[None, None], model_name=None, fallback="no_model", latency_ms={}),
        decision(3, new_field={"b": 1, "a": [2]}),  # a field the format does not declare is kept as JSON
    ])
    drain(client, tmp_path).drain()
    frame = read_partition(tmp_path, DAY)
    assert [list(v) for v in frame["candidates"]] == [["no_action", "push_reminder"]] * 3
    # null scores (candidates the model did not score) are parquet nulls, NaN once in pandas
    assert [[None if pd.isna(x) else x for x in v] for v in frame["scores"]][:2] == [[None, 0.25], [None, None]]
    assert frame["experiments"].tolist() == ['{"exp_a":"treatment"}', "{}", '{"exp_a":"treatment"}']
    assert json.loads(frame["latency_ms"][0]) == {"features": 1.5, "total": 2.25} and frame["latency_ms"][1] == "{}"
    assert frame["model_name"].tolist() == ["hyperlift_uplift", None, "hyperlift_uplift"]
    assert frame["new_field"].tolist()[2] == '{"a":[2],"b":1}' and pd.isna(frame["new_field"][0])
    assert frame["ts"].dtype == "float64"


def test_crash_between_write_and_ack_rewrites_the_same_files_and_leaves_no_duplicate(client, tmp_path, monkeypatch):
    records = [decision(i, T0 + i) for i in range(1000)]
    ids = append(client, records)
    crashing = drain(client, tmp_path, batch=400)
    monkeypatch.setattr(crashing, "_ack", fail_on_call(2)(crashing._ack))  # 1st batch acked, 2nd written, not acked
    with pytest.raises(Crash):
        crashing.drain()
    before = sorted(p.name for p in (tmp_path / f"date={DAY}").iterdir())
    assert before == [f"part-{ids[0]}-{ids[399]}.parquet", f"part-{ids[400]}-{ids[799]}.parquet"]
    assert pending(client) == 400

    result = drain(client, tmp_path, batch=400).drain()
    assert (result.read, result.written, result.acked) == (600, 600, 600)  # 400 pending again + 200 new
    assert result.files[0].name == before[1]  # the same name: the crashed write is overwritten, not doubled
    frame = read_partition(tmp_path, DAY)
    assert frame["decision_id"].tolist() == [r["decision_id"] for r in records] and frame["stream_id"].tolist() == ids
    assert pending(client) == 0


def test_crash_before_write_loses_nothing(client, tmp_path, monkeypatch):
    records = [decision(i, T0 + i) for i in range(500)]
    append(client, records)
    crashing = drain(client, tmp_path, batch=200)
    monkeypatch.setattr(crashing, "_write", fail_on_call(2)(crashing._write))
    with pytest.raises(Crash):
        crashing.drain()
    assert pending(client) == 200 and len(read_partition(tmp_path, DAY)) == 200

    drain(client, tmp_path, batch=200).drain()
    frame = read_partition(tmp_path, DAY)
    assert sorted(frame["decision_id"]) == sorted(r["decision_id"] for r in records) and frame["decision_id"].is_unique
    assert pending(client) == 0


def test_entries_of_a_dead_consumer_are_claimed_by_another(client, tmp_path, monkeypatch):
    records = [decision(i, T0 + i) for i in range(300)]
    append(client, records)
    dead = drain(client, tmp_path, batch=300, consumer="dead")
    monkeypatch.setattr(dead, "_ack", fail_on_call(1)(dead._ack))
    with pytest.raises(Crash):
        dead.drain()

    result = drain(client, tmp_path, consumer="alive", claim_idle_ms=0).drain()
    assert (result.claimed, result.read, result.acked) == (300, 300, 300)
    assert len(read_partition(tmp_path, DAY)) == 300 and pending(client) == 0


def test_overlapping_files_from_a_changed_batch_size_are_deduplicated_on_read(client, tmp_path, monkeypatch):
    records = [decision(i, T0 + i) for i in range(5)]
    ids = append(client, records)
    crashing = drain(client, tmp_path, batch=5)
    monkeypatch.setattr(crashing, "_ack", fail_on_call(1)(crashing._ack))
    with pytest.raises(Crash):
        crashing.drain()
    drain(client, tmp_path, batch=2).drain()
    on_disk = pd.concat(pd.read_parquet(p) for p in (tmp_path / f"date={DAY}").glob("part-*.parquet"))
    assert len(on_disk) == 10  # part-1-5 from the crash, part-1-2, part-3-4, part-5-5 from the retry
    assert read_partition(tmp_path, DAY)["stream_id"].tolist() == ids


def test_a_record_appended_twice_is_read_once_keeping_the_first(client, tmp_path):
    ids = append(client, [decision(1, T0), decision(2, T0 + 1), decision(1, T0 + 2)])  # a producer retry
    drain(client, tmp_path).drain()
    frame = read_partition(tmp_path, DAY)
    assert frame["stream_id"].tolist() == ids[:2] and frame["ts"].tolist() == [T0, T0 + 1]


def test_two_drains_with_records_in_between(client, tmp_path):
    first = [decision(i, T0 + i) for i in range(250)]
    append(client, first)
    assert drain(client, tmp_path, batch=100).drain().written == 250
    second = [decision(i, T0 + i) for i in range(250, 400)]
    append(client, second)
    assert drain(client, tmp_path, batch=100).drain().written == 150
    assert drain(client, tmp_path, batch=100).drain().read == 0
    frame = read_partition(tmp_path, DAY)
    assert frame["decision_id"].tolist() == [r["decision_id"] for r in first + second]


def test_a_batch_across_midnight_writes_one_file_per_utc_date(client, tmp_path):
    records = [decision(0, MIDNIGHT - 0.5), decision(1, MIDNIGHT + 0.5), decision(2, MIDNIGHT - 0.25)]
    ids = append(client, records)
    result = drain(client, tmp_path).drain()
    assert [p.relative_to(tmp_path).as_posix() for p in result.files] == [
        f"date=2026-03-01/part-{ids[0]}-{ids[2]}.parquet", f"date=2026-03-02/part-{ids[1]}-{ids[1]}.parquet",
    ]
    assert read_partition(tmp_path, "2026-03-01")["decision_id"].tolist() == [records[0]["decision_id"],
                                                                             records[2]["decision_id"]]
    assert read_partition(tmp_path, "2026-03-02")["decision_id"].tolist() == [records[1]["decision_id"]]
    assert [str(d) for d in partition_dates(tmp_path)] == ["2026-03-01", "2026-03-02"]
    assert read_partitions(tmp_path)["stream_id"].tolist() == ids


def test_unstorable_records_are_kept_aside_with_a_reason_and_acknowledged(client, tmp_path):
    good = decision(1)
    client.xadd(STREAM, {"record": json.dumps(good)})
    client.xadd(STREAM, {"record": "{not json"})
    client.xadd(STREAM, {"record": json.dumps({**decision(2), "decision_id": None})})
    client.xadd(STREAM, {"record": json.dumps(decision(3, ts="yesterday"))})
    client.xadd(STREAM, {"record": json.dumps(decision(4, candidates="push_reminder"))})
    client.xadd(STREAM, {"record": json.dumps(decision(5, scores=[0.1, "high"]))})
    result = drain(client, tmp_path).drain()
    assert (result.read, result.written, result.rejected, result.acked) == (6, 1, 5, 6)
    assert read_partition(tmp_path, DAY)["decision_id"].tolist() == [good["decision_id"]]
    lines = [json.loads(line) for f in (tmp_path / "rejected").glob("*.jsonl") for line in f.read_text().splitlines()]
    reasons = [line["reason"].split(":")[0] for line in lines]
    assert reasons == ["not JSON", "no decision_id", "ts is not a finite number", "candidates is not a list",
                       "wrong type"]
    assert lines[0]["record"] == "{not json" and pending(client) == 0


def test_pending_entries_trimmed_from_the_stream_are_counted_missing(client, tmp_path, monkeypatch):
    ids = append(client, [decision(i, T0 + i) for i in range(4)])
    crashing = drain(client, tmp_path)
    monkeypatch.setattr(crashing, "_write", fail_on_call(1)(crashing._write))
    with pytest.raises(Crash):
        crashing.drain()
    client.xdel(STREAM, ids[0])
    result = drain(client, tmp_path).drain()
    # Redis 6 re-delivers the deleted entry empty (acked here); Redis 7 drops it from the group when claiming
    assert (result.read, result.written, result.missing) == (4, 3, 1)
    assert len(read_partition(tmp_path, DAY)) == 3 and pending(client) == 0


def test_backlog_counts_pending_and_undelivered_entries(client, tmp_path):
    assert stream_backlog(client, STREAM, GROUP) == 0
    append(client, [decision(i) for i in range(5)])
    assert stream_backlog(client, STREAM, GROUP) == 5  # no group yet: the whole stream
    client.xgroup_create(STREAM, GROUP, id="0")
    client.xreadgroup(GROUP, "c1", {STREAM: ">"}, count=4)
    assert stream_backlog(client, STREAM, GROUP) == 5  # 4 pending + 1 undelivered
    drain(client, tmp_path).drain()
    assert stream_backlog(client, STREAM, GROUP) == 0


def test_outcomes_are_keyed_by_outcome_id_not_by_the_decision_they_name(client, tmp_path):
    outcomes = [{"outcome_id": f"o{i}", "ts": T0 + i, "user_key": "u1", "decision_id": "d1", "kind": "purchase",
                 "revenue": 10.0 * i} for i in range(3)]
    for o in outcomes:
        client.xadd("hyperlift:outcomes", {"record": json.dumps(o)})
    StreamDrain(client, "hyperlift:outcomes", GROUP, "c1", tmp_path, OUTCOME_FORMAT).drain()
    frame = read_partition(tmp_path, DAY)  # the key comes from the files' metadata
    assert frame["outcome_id"].tolist() == ["o0", "o1", "o2"] and frame["revenue"].tolist() == [0.0, 10.0, 20.0]
    assert read_partition(tmp_path, "2026-03-09", OUTCOME_FORMAT).columns.tolist() == [
        "stream_id", "outcome_id", "ts", "user_key", "decision_id", "kind", "revenue",
    ]


def test_an_overrun_of_the_capped_stream_is_reported(client, tmp_path):
    if int(client.info("server")["redis_version"].split(".")[0]) < 7:
        pytest.skip("Redis < 7 does not report deleted entry ids")
    ids = append(client, [decision(i) for i in range(3)])
    client.xgroup_create(STREAM, GROUP, id="0")
    client.xdel(STREAM, ids[1])  # deleted before the group read it
    assert drain(client, tmp_path).drain().overrun
    assert not drain(client, tmp_path).drain().overrun


def test_a_client_that_decodes_responses_drains_the_same(online_redis_url, tmp_path):
    client = redis.Redis.from_url(online_redis_url, decode_responses=True)
    ids = append(client, [decision(i, T0 + i) for i in range(3)])
    assert drain(client, tmp_path).drain().written == 3
    assert read_partition(tmp_path, DAY)["stream_id"].tolist() == ids and stream_backlog(client, STREAM, GROUP) == 0
