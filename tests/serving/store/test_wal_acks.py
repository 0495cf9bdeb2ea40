"""The drain's receipts: contiguous per writer (a gap holds them back), restored by the writer's floor, merged
across drains, kept in the lake and published to Redis."""

import json

import redis

from serving.store.wal_acks import WalAcks, WriterAcks, parse_wal_field, wal_field


def test_a_receipt_advances_only_over_contiguous_seqs():
    acks = WriterAcks()
    acks.add(1, 5)
    acks.add(8, 10)
    assert (acks.acked, acks.seen, acks.logged, acks.ranges) == (5, 10, 8, [[8, 10]])
    acks.add(7, 7)
    acks.add(3, 4)  # again: already in
    assert (acks.acked, acks.ranges) == (5, [[7, 10]])
    acks.add(6, 6)
    assert (acks.acked, acks.seen, acks.ranges) == (10, 10, [])


def test_the_writers_floor_restores_a_lost_receipt_and_steps_over_damaged_records():
    acks = WriterAcks()
    acks.add(900, 950)
    acks.raise_floor(899)  # the writer deleted everything up to 899 after an earlier receipt
    assert (acks.acked, acks.ranges) == (950, [])


def test_the_wal_field_round_trips_and_a_malformed_one_is_ignored():
    assert parse_wal_field(wal_field(b"w-1", 12, 7)) == ("w-1", 12, 7)
    assert parse_wal_field(b"w-1:x:7") is None and parse_wal_field(None) is None


def test_receipts_are_saved_merged_with_another_drain_and_published(tmp_path, online_redis_url):
    path = tmp_path / "_wal_acks.lake.json"
    first = WalAcks(path)
    first.observe([("a", seq, 0) for seq in (1, 2, 3, 5)])
    first.save()
    second = WalAcks(path)  # a concurrent drain that read the file before the first wrote more
    first.observe([("b", 1, 0)])
    first.save()
    second.observe([("a", 4, 0)])
    second.save()
    merged = WalAcks(path).writers
    assert (merged["a"].acked, merged["a"].ranges, merged["b"].acked) == (5, [], 1)
    client = redis.Redis.from_url(online_redis_url)
    second.publish(client, "s:wal_acks:lake")
    published = {k.decode(): json.loads(v) for k, v in client.hgetall("s:wal_acks:lake").items()}
    assert published == {"a": {"acked": 5, "seen": 5, "gen": 1}, "b": {"acked": 1, "seen": 1, "gen": 1}}
    assert WalAcks(path).gen == 1  # generations only move forward
