"""Round trips on a real Redis Cluster: split per node, answered in order, redirected after a failover; and on one
server, the same path as before (one write)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import redis

from infra.redis_cluster import redis_client, slot
from serving.store.cluster_routing import CrossSlotCommand, plan
from serving.store.redis_async import AsyncRedis, async_redis
from serving.store.redis_cluster_async import AsyncRedisCluster
from serving.store.round_trip import RoundTrip
from tests.infra.redis_cluster import cluster_url, own_cluster, redis_cluster  # noqa: F401

pytestmark = pytest.mark.redis_cluster

FEAST_KEY = b"\x02\x00\x00\x00user_id\x04\x00\x00\x00\x08\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00hyperlift"
KEYS = [FEAST_KEY, "hyperlift:consent:{7}", "hyperlift:caps:{u7}:daily", "hyperlift:budget:{summer:2026-12-06}",
        "hyperlift:budget:{flash:2026-12-06}", "hyperlift:budget:{sitewide:2026-12-06}"]
SPEND = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


def decision_like(pipe: RoundTrip, sha: str) -> None:
    """What a decision's read and reservation round trips hold: features, consent, caps, budgets, a script."""
    pipe.hmget(FEAST_KEY, [b"f1", b"_ts:v"])
    pipe.hmget("hyperlift:consent:{7}", ["consent_marketing"])
    pipe.zcount("hyperlift:caps:{u7}:daily", "-inf", "+inf")
    pipe.mget(KEYS[3:] + ["hyperlift:budget:{nobody:2026-12-06}"])
    pipe.evalsha(sha, 1, "hyperlift:budget:{flash:2026-12-06}", 5)
    pipe.command_stack.append(("PING",))


def seed(client) -> str:
    client.hset(FEAST_KEY, mapping={b"f1": b"x", b"_ts:v": b"t"})
    client.hset("hyperlift:consent:{7}", "consent_marketing", "1 1000 api")
    client.zadd("hyperlift:caps:{u7}:daily", {"a": 1, "b": 2})
    for key, value in zip(KEYS[3:], (10, 20, 30)):
        client.set(key, value)
    return client.script_load(SPEND)


EXPECTED = [[b"x", b"t"], [b"1 1000 api"], 2, [b"10", b"20", b"30", None], 25, b"PONG"]


def test_a_decisions_keys_span_several_masters(redis_cluster):  # noqa: F811
    assert len({redis_cluster.master_of(key).port for key in KEYS}) == 3
    batches = plan([("HMGET", FEAST_KEY, b"f"), ("MGET", *KEYS[3:]), ("PING",)], lambda s: s * 3 // 16384)
    # the MGET is split per slot, the keyless PING rides with the first node's batch
    assert sum(len(b.commands) for b in batches) == 5 and batches[0].commands[-1] == ("PING",)


def test_sync_round_trip_on_the_cluster_answers_what_one_server_answers(cluster_url, redis_databases):  # noqa: F811
    answers = []
    for client in (redis.Redis.from_url(redis_databases.fresh()), redis_client(cluster_url, timeout_s=1.0)):
        sha = seed(client)
        pipe = RoundTrip(client)
        decision_like(pipe, sha)
        answers.append(pipe.execute())
    assert answers[0] == answers[1] == EXPECTED


def test_async_round_trip_on_the_cluster_answers_what_one_server_answers(cluster_url, redis_databases):  # noqa: F811
    url = redis_databases.fresh()
    single, cluster = async_redis(url, 1.0), async_redis(cluster_url, 1.0)
    assert type(single) is AsyncRedis and type(cluster) is AsyncRedisCluster

    async def run(client, sync_client) -> list:
        pipe = RoundTrip(sync_client)
        decision_like(pipe, seed(sync_client))
        return await client.execute(pipe.command_stack)

    answers = asyncio.run(_both(run, (single, redis.Redis.from_url(url)), (cluster, redis_client(cluster_url))))
    assert answers[0] == answers[1] == EXPECTED
    assert cluster.refreshes == 1 and len(cluster._nodes) == 3  # one slot map read, one connection per master


async def _both(run, *pairs):
    return [await run(client, sync_client) for client, sync_client in pairs]


def test_a_script_whose_keys_span_slots_is_refused_before_anything_is_sent(cluster_url):  # noqa: F811
    client = redis_client(cluster_url)
    pipe = RoundTrip(client)
    pipe.decrby("sent-first", 1)
    pipe.evalsha("0" * 40, 2, KEYS[3], KEYS[4], 1, 1)
    with pytest.raises(CrossSlotCommand, match="EVALSHA with keys in 2 slots cannot run on a Redis Cluster"):
        pipe.execute()
    assert client.get("sent-first") is None  # the whole round trip was refused, not half of it


def test_a_failover_redirects_the_round_trip_to_the_new_master(redis_cluster, cluster_url):  # noqa: F811
    """A graceful CLUSTER FAILOVER: the old master answers MOVED; the command did not run, and is sent once more to
    the new master after one fresh read of the slot map."""
    client = AsyncRedisCluster(cluster_url, 1.0)

    async def scenario() -> tuple[list, list]:
        before = await client.execute([("INCR", "counter"), ("MGET", *KEYS[3:])])
        old = redis_cluster.master_of("counter")
        roles = {n.port: n.client().execute_command("ROLE") for n in redis_cluster.live_nodes()}
        replica = next(n for n in redis_cluster.nodes if roles.get(n.port, [b""])[0] == b"slave"
                       and roles[n.port][2] == old.port)
        old.client().execute_command("WAIT", 1, 2000)  # the replica has the first INCR
        deadline, asked = time.monotonic() + 40, 0.0
        while redis_cluster.master_of("counter").port == old.port:
            assert time.monotonic() < deadline, "the replica did not take over"
            if time.monotonic() > asked + 8:  # a manual failover gives up after 5 s on a busy machine: ask again
                replica.client().execute_command("CLUSTER FAILOVER")
                asked = time.monotonic()
            await asyncio.sleep(0.05)
        after = await client.execute([("INCR", "counter"), ("MGET", *KEYS[3:])])
        return before, after

    before, after = asyncio.run(scenario())
    assert before == [1, [None, None, None]] and after == [2, [None, None, None]]  # INCR ran exactly once each time
    assert client.refreshes == 2


def test_keys_in_one_slot_per_user_stay_together():
    # caps and consent of a user share their tags; budgets of one day spread over their campaigns
    assert slot("hyperlift:caps:{u7}:daily") == slot("hyperlift:caps:{u7}:weekly")
    assert len({slot(f"hyperlift:budget:{{c{i}:2026-12-06}}") for i in range(20)}) == 20


def test_a_hung_master_times_out_its_round_trips_and_not_the_others(own_cluster):  # noqa: F811
    """SIGSTOP one master (a node that accepts connections and never answers): round trips that need it raise
    TimeoutError, round trips to the other masters are answered meanwhile, and all are answered once it resumes."""
    client = AsyncRedisCluster(own_cluster.url, 0.2)
    hung = own_cluster.master_of("on-hung")
    other = next(k for k in (f"k{i}" for i in range(100)) if own_cluster.master_of(k).port != hung.port)

    async def scenario() -> list:
        assert await client.execute([("SET", "on-hung", 1), ("SET", other, 2)]) == [b"OK", b"OK"]
        os.kill(hung.process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(redis.exceptions.TimeoutError):
                await client.execute([("GET", "on-hung"), ("GET", other)])
            alone = await client.execute([("GET", other)])  # another master's connection is not held up
        finally:
            os.kill(hung.process.pid, signal.SIGCONT)
        return [alone, await client.execute([("GET", "on-hung"), ("GET", other)])]

    assert asyncio.run(scenario()) == [[b"2"], [b"1", b"2"]]
