"""The trace writer batches records into few round trips and keeps their order; every record waits on local disk
until the lake has it, goes again after a Redis failure, restart or gap, and what it cannot keep is counted."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from infra.redis_server import EmbeddedRedis, free_port
from serving.store.decision_log import DECISION_FORMAT, DRAIN_GROUP, StreamDrain, read_partitions
from serving.store.trace import DAMAGED_ON_DISK, DISK_BUDGET, QUEUE_FULL, UNWRITTEN_AT_EXIT, TraceWriter
from serving.store.wal import SEGMENT_SUFFIX
from serving.store.wal_acks import acks_key

STREAM = "hyperlift:decisions"
T0 = 1_772_366_400.0  # 2026-03-01 12:00 UTC


class CountingClient(redis.Redis):
    """A real client that counts the pipelines it opens."""

    pipelines = 0

    def pipeline(self, *args, **kwargs):
        type(self).pipelines += 1
        return super().pipeline(*args, **kwargs)


def record(i: int) -> dict:
    return {"decision_id": f"d{i:05d}", "ts": T0}


def ids(n: int, start: int = 0) -> list[str]:
    return [record(i)["decision_id"] for i in range(start, start + n)]


def writer_on(url: str, wal_dir: Path, **kwargs) -> TraceWriter:
    # A generous timeout: these tests stop or kill the server (refused at once); a busy machine must not turn a slow
    # answer into a timeout and a resend, which would change the exact counts asserted.
    client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0, retry=None)
    return TraceWriter(client, STREAM, 100_000, wal_dir, **{"ack_poll_s": 0.05, **kwargs})


def stream_ids(url: str) -> list[str]:
    return [json.loads(fields[b"record"])["decision_id"] for _, fields in redis.Redis.from_url(url).xrange(STREAM)]


def drain(url: str, lake: Path):
    return StreamDrain(redis.Redis.from_url(url), STREAM, DRAIN_GROUP, "test", lake, DECISION_FORMAT).drain()


def lake_ids(lake: Path) -> list[str]:
    return read_partitions(lake, record_format=DECISION_FORMAT)["decision_id"].tolist()


def wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_records_are_written_in_order_in_a_few_batches(redis_databases, tmp_path):
    client = CountingClient.from_url(redis_databases.fresh())
    writer = TraceWriter(client, "s", maxlen=10_000, wal_dir=tmp_path, linger_s=0.05)
    for i in range(200):
        writer.append({"decision_id": str(i)})
    writer.close()
    ids_in_stream = [json.loads(fields[b"record"])["decision_id"] for _, fields in client.xrange("s")]
    assert ids_in_stream == [str(i) for i in range(200)] and writer.written == 200 and writer.dropped == 0
    assert writer.stats.sent == 200 and writer.stats.spilled == writer.stats.replayed == 0
    assert CountingClient.pipelines == 0  # one packed write per batch, not a pipeline (nor a round trip) per record


def test_a_full_queue_drops_and_counts_instead_of_blocking(redis_databases, tmp_path):
    drops = []
    writer = TraceWriter(redis.Redis.from_url(redis_databases.fresh()), "s", 100, tmp_path, queue_size=1,
                         linger_s=0.5, on_drop=drops.append)
    writer.append({"decision_id": "first"})
    deadline = time.monotonic() + 5
    while writer._queue.qsize() and time.monotonic() < deadline:  # the writer took it and lingers
        time.sleep(0.001)
    for i in range(3):
        writer.append({"decision_id": str(i)})  # one fits in the queue, two do not
    writer.close()
    assert writer.dropped == 2 and drops == [1, 1] and writer.written == 2
    assert writer.dropped_by_reason() == {QUEUE_FULL: 2} and writer.appended == 4


def test_records_encode_as_plain_json_with_numpy_scalars_nan_as_null_and_odd_values_as_text():
    from datetime import date

    import numpy as np

    from serving.store.trace import encode

    record = {"decision_id": "d1", "scores": [0.1234567890123, None, np.float64(0.5), np.float32(0.25)],
              "probabilities": [float("nan"), 1.0], "day": date(2026, 12, 1), "chosen": ["a"], "n": np.int64(3)}
    assert json.loads(encode(record)) == {
        "decision_id": "d1", "scores": [0.1234567890123, None, 0.5, 0.25], "probabilities": [None, 1.0],
        "day": "2026-12-01", "chosen": ["a"], "n": 3,
    }


def test_records_wait_on_disk_while_redis_is_down_and_go_in_order_when_it_starts(tmp_path):
    port = free_port()
    writer = writer_on(f"redis://127.0.0.1:{port}/0", tmp_path / "wal")
    for batch in range(3):
        for i in range(10):
            writer.append(record(batch * 10 + i))
        assert writer.flush() is False  # Redis refused: the records are on disk, not lost
    assert (writer.written, writer.stats.spilled, writer.stats.sent) == (30, 30, 0)
    assert writer.pending_records == writer.unsent_records == 30 and writer.dropped == 0
    server = EmbeddedRedis(tmp_path / "redis", port=port)
    server.start()
    try:
        assert writer.flush(10, wait_for_redis=True)
        assert stream_ids(server.url) == ids(30) and writer.stats.replayed == 30 and writer.dropped == 0
        writer.close()
    finally:
        server.stop()


def test_segments_are_deleted_once_the_lake_has_their_records(own_redis, tmp_path):
    writer = writer_on(own_redis.url, tmp_path / "wal", segment_bytes=2_000)
    for i in range(100):
        writer.append(record(i))
        if i % 10 == 9:
            assert writer.flush(10)  # batches of 10 (~600 bytes): a segment holds three
    segments = lambda: sorted(writer._own.path.glob(f"*{SEGMENT_SUFFIX}"))  # noqa: E731
    assert len(segments()) > 3 and writer.pending_records == 100
    result = drain(own_redis.url, tmp_path / "lake")
    assert (result.written, result.receipted) == (100, 100)
    receipt = json.loads(redis.Redis.from_url(own_redis.url).hget(acks_key(STREAM, DRAIN_GROUP), writer._own.writer_id))
    assert (receipt["acked"], receipt["seen"]) == (100, 100)
    wait_for(lambda: len(segments()) == 1)  # the active segment stays open for the next batch
    assert writer.pending_records == 0 and segments()[0].name == f"seg-{91:020d}{SEGMENT_SUFFIX}"
    writer.close()


def test_a_redis_restart_that_lost_the_stream_is_repaired_by_resending_what_the_lake_lacks(own_redis, tmp_path):
    writer = writer_on(own_redis.url, tmp_path / "wal")
    for i in range(50):
        writer.append(record(i))
    assert writer.flush(10) and stream_ids(own_redis.url) == ids(50)
    own_redis.kill()  # no persistence: it comes back empty, as from a snapshot older than every record
    own_redis.start()
    for i in range(50, 60):
        writer.append(record(i))
    assert writer.flush(10, wait_for_redis=True)
    assert stream_ids(own_redis.url) == ids(60)  # the lost 50 first, in order, then the new ones
    assert (writer.stats.redis_restarts, writer.dropped) == (1, 0)
    # the lost 50 went again exactly once; the new 10 went at once or, if they arrived before the writer had noticed
    # the restart, waited on disk and went from there
    assert writer.stats.replayed - writer.stats.spilled == 50 and 0 <= writer.stats.spilled <= 10
    drain(own_redis.url, tmp_path / "lake")
    assert lake_ids(tmp_path / "lake") == ids(60)
    writer.close()


def test_a_gap_the_drain_reports_is_sent_again_and_the_lake_keeps_each_record_once(own_redis, tmp_path):
    writer = writer_on(own_redis.url, tmp_path / "wal")
    for i in range(100):
        writer.append(record(i))
    assert writer.flush(10)
    client = redis.Redis.from_url(own_redis.url)
    lost = [sid for sid, fields in client.xrange(STREAM)
            if 40 <= int(json.loads(fields[b"record"])["decision_id"][1:]) < 60]
    client.xdel(STREAM, *lost)  # gone without a restart the writer could notice (a trim, a failover)
    drain(own_redis.url, tmp_path / "lake")
    assert len(lake_ids(tmp_path / "lake")) == 80
    wait_for(lambda: writer.stats.gap_resends == 1)
    assert writer.flush(10, wait_for_redis=True)
    result = drain(own_redis.url, tmp_path / "lake")
    assert result.written == 60  # 41..100 again: the hole and what followed it
    logged = lake_ids(tmp_path / "lake")
    assert sorted(logged) == ids(100) and len(logged) == 100  # each once (in stream order: the hole came last)
    wait_for(lambda: writer.pending_records == 0)
    writer.close()


def test_over_the_disk_budget_records_are_dropped_with_their_reason(tmp_path):
    drops = []
    writer = writer_on(f"redis://127.0.0.1:{free_port()}/0", tmp_path / "wal", on_drop=drops.append)
    padded = lambda i: {**record(i), "pad": "x" * 1000}  # noqa: E731
    writer.append(padded(0))
    writer.flush()
    one = writer.pending_bytes  # one record and its marker on disk
    writer.max_bytes = 3 * one + 500  # room for two more
    for i in range(1, 5):
        writer.append(padded(i))
        writer.flush()
    assert writer.written == 3 and writer.dropped_by_reason() == {DISK_BUDGET: 2} and drops == [1, 1]
    assert writer.pending_records == 3 and writer.pending_bytes <= writer.max_bytes
    writer.close(timeout_s=0.1)


def test_over_the_budget_with_the_drain_away_records_redis_has_are_released_not_dropped(own_redis, tmp_path):
    writer = writer_on(own_redis.url, tmp_path / "wal", segment_bytes=2_000)
    for i in range(100):
        writer.append(record(i))
        if i % 10 == 9:
            assert writer.flush(10)
            writer.max_bytes = 5_000  # after the first batch: room for about three segments
    assert writer.dropped == 0 and writer.stats.released_unconfirmed > 0
    assert writer.pending_bytes <= 5_000 and writer.pending_records == 100 - writer.stats.released_unconfirmed
    drain(own_redis.url, tmp_path / "lake")  # Redis kept them: the lake gets all, the receipt covers all
    assert lake_ids(tmp_path / "lake") == ids(100)
    wait_for(lambda: writer.pending_records == 0)
    writer.close()


VICTIM = """
import os, signal, sys
import redis
from serving.store.trace import TraceWriter

url, wal = sys.argv[1], sys.argv[2]
writer = TraceWriter(redis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25, retry=None),
                     "hyperlift:decisions", 100_000, wal, linger_s=0.05)
i = 0
for burst in range(5):
    for _ in range(200):
        writer.append({"decision_id": f"d{i:05d}", "ts": 1772366400.0})
        i += 1
    writer.flush()
for _ in range(37):  # served, answered, and then the process is killed before its writer takes them
    writer.append({"decision_id": f"d{i:05d}", "ts": 1772366400.0})
    i += 1
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("redis_up", [True, False], ids=["redis-up", "redis-down"])
def test_a_killed_service_loses_only_what_it_had_not_written_and_the_next_one_counts_it(own_redis, tmp_path, redis_up):
    victim_url = own_redis.url if redis_up else f"redis://127.0.0.1:{free_port()}/0"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    done = subprocess.run([sys.executable, "-c", VICTIM, victim_url, str(tmp_path / "wal")], env=env, timeout=60)
    assert done.returncode == -signal.SIGKILL
    successor = writer_on(own_redis.url, tmp_path / "wal")
    (dead,) = successor._adopted
    offered = dead.counters.get("offered")
    lost = successor.dropped_by_reason().get(UNWRITTEN_AT_EXIT, 0)
    assert offered == 1037 and lost <= 37  # only the burst the writer had not taken yet can be gone
    assert successor.flush(10, wait_for_redis=True)
    drain(own_redis.url, tmp_path / "lake")
    assert lake_ids(tmp_path / "lake") == ids(offered - lost)  # everything else, in order, each once
    if not redis_up:  # nothing reached Redis before the kill: every record written goes from disk
        assert successor.stats.replayed == offered - lost
    wait_for(lambda: not successor._adopted)  # all in the lake: the dead writer's folder is removed
    assert [p.name for p in (tmp_path / "wal").iterdir()] == [successor._own.writer_id]
    successor.close()


def test_a_damaged_line_is_skipped_counted_and_stepped_over(own_redis, tmp_path):
    first = writer_on(f"redis://127.0.0.1:{free_port()}/0", tmp_path / "wal")
    for i in range(20):
        first.append(record(i))
    first.flush()
    first.close(timeout_s=0.1)
    (segment,) = first._own.path.glob(f"*{SEGMENT_SUFFIX}")
    data = segment.read_bytes()
    at = data.index(b'"d00006"')  # seq 7
    segment.write_bytes(data[:at] + b'"D' + data[at + 2:])
    second = writer_on(own_redis.url, tmp_path / "wal")
    assert second.flush(10, wait_for_redis=True)
    assert second.dropped_by_reason() == {DAMAGED_ON_DISK: 1}
    drain(own_redis.url, tmp_path / "lake")
    wait_for(lambda: second.stats.gap_resends == 1)  # the drain waits at seq 6; the resend says 7 is gone
    assert second.flush(10, wait_for_redis=True)
    drain(own_redis.url, tmp_path / "lake")
    assert lake_ids(tmp_path / "lake") == [i for i in ids(20) if i != "d00006"]
    wait_for(lambda: not second._adopted)
    second.close()


def test_an_unexpected_error_in_the_writer_is_counted_and_the_writer_goes_on(redis_databases, tmp_path, monkeypatch):
    """A bug in a step must neither kill the thread (the queue would fill and drop everything) nor go unseen."""
    writer = TraceWriter(redis.Redis.from_url(redis_databases.fresh()), "s", 10_000, tmp_path, linger_s=0.01)
    real_step, calls = writer._step, []

    def failing_once():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected bug")
        return real_step()

    monkeypatch.setattr(writer, "_step", failing_once)
    monkeypatch.setattr(time, "sleep", lambda s: None)  # the writer's 1 s back-off, skipped here
    writer.append({"decision_id": "a"})
    # the thread may already sit in a real step when the patch lands: wait for both, in either order
    wait_for(lambda: writer.stats.writer_errors == 1 and writer.stats.sent == 1)
    writer.close()
    assert writer.stats.writer_errors == 1 and writer.dropped == 0 and writer.stats.sent == 1
