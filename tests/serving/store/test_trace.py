"""The trace writer batches records into few round trips, keeps their order, and counts what it must drop."""

import json
import time

import redis

from serving.store.trace import TraceWriter


class CountingClient(redis.Redis):
    """A real client that counts the pipelines it opens."""

    pipelines = 0

    def pipeline(self, *args, **kwargs):
        type(self).pipelines += 1
        return super().pipeline(*args, **kwargs)


def test_records_are_written_in_order_in_a_few_batches(redis_databases):
    client = CountingClient.from_url(redis_databases.fresh())
    writer = TraceWriter(client, "s", maxlen=10_000, linger_s=0.05)
    for i in range(200):
        writer.append({"decision_id": str(i)})
    writer.close()
    ids = [json.loads(fields[b"record"])["decision_id"] for _, fields in client.xrange("s")]
    assert ids == [str(i) for i in range(200)] and writer.written == 200 and writer.dropped == 0
    assert CountingClient.pipelines <= 5  # not one round trip per record


def test_a_full_queue_drops_and_counts_instead_of_blocking(redis_databases):
    drops = []
    writer = TraceWriter(redis.Redis.from_url(redis_databases.fresh()), "s", 100, queue_size=1, linger_s=0.5,
                         on_drop=drops.append)
    writer.append({"decision_id": "first"})
    deadline = time.monotonic() + 5
    while writer._queue.qsize() and time.monotonic() < deadline:  # the writer took it and lingers
        time.sleep(0.001)
    for i in range(3):
        writer.append({"decision_id": str(i)})  # one fits in the queue, two do not
    writer.close()
    assert writer.dropped == 2 and drops == [1, 1] and writer.written == 2


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
