"""The reconciliation: served = logged + in flight + dropped, per writer, and the ids still on their way."""

import json

import redis

from serving.store.reconcile import reconcile
from serving.store.trace import DISK_BUDGET
from serving.store.wal import destination_dir
from serving.store.wal_acks import writers_key
from tests.serving.store.test_trace import STREAM, drain, ids, record, wait_for, writer_on


def published(url: str, writer_id: str) -> dict:
    raw = redis.Redis.from_url(url).hget(writers_key(STREAM), writer_id)
    return json.loads(raw) if raw else {}


def test_served_decisions_are_logged_in_flight_or_dropped_with_a_reason(own_redis, tmp_path):
    wal_dir, lake = destination_dir(tmp_path / "wal", own_redis.url, STREAM), tmp_path / "lake"
    first = writer_on(own_redis.url, wal_dir)
    first.append({**record(0), "pad": "x" * 1000})
    assert first.flush(10)
    first.max_bytes = 3 * first.pending_bytes + 500  # room for two more records
    for i in range(1, 5):
        first.append({**record(i), "pad": "x" * 1000})
        first.flush(10)
    first.close()
    drain(own_redis.url, lake)
    second = writer_on(own_redis.url, wal_dir)  # adopts the first's folder, then retires it: all in the lake
    wait_for(lambda: not second._adopted)
    for i in range(100, 110):
        second.append(record(i))
    assert second.flush(10)
    wait_for(lambda: published(own_redis.url, second._own.writer_id).get("appended") == 10)

    books = reconcile(redis.Redis.from_url(own_redis.url), lake, STREAM, wal_dir=wal_dir)
    rows = {w.writer: w for w in books.writers}
    old, new = rows[first._own.writer_id], rows[second._own.writer_id]
    row = lambda w: (w.served, w.written, w.logged, w.in_flight, w.dropped, w.live)  # noqa: E731
    assert row(old) == (5, 3, 3, 0, {DISK_BUDGET: 2}, False) and row(new) == (10, 10, 0, 10, {}, True)
    assert books.finished_unaccounted() == 0 and old.unaccounted == new.unaccounted == 0
    assert (books.total("served"), books.total("missing"), books.dropped()) == (15, 12, {DISK_BUDGET: 2})
    assert books.missing_ids == ids(10, start=100)  # read from the write-ahead file: on disk, not in the lake

    drain(own_redis.url, lake)
    books = reconcile(redis.Redis.from_url(own_redis.url), lake, STREAM, wal_dir=wal_dir)
    assert (books.total("logged"), books.total("in_flight"), books.missing_ids) == (13, 0, [])
    second.close()
