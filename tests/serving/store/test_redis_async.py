"""AsyncRedis (serving/store/redis_async.py): the sync RoundTrip's replies, in order under concurrency, and redis-py's
errors for refused, lost and late connections."""

import asyncio

import pytest
import redis

from serving.store.redis_async import AsyncRedis
from serving.store.round_trip import RoundTrip
from tests.serving.store.test_round_trip import SCRIPT, queue, seeded


@pytest.fixture
def client(redis_databases) -> redis.Redis:
    return seeded(redis_databases)


def run(coroutine):
    return asyncio.run(coroutine)


def test_replies_equal_the_sync_round_trip(client, redis_databases):
    sha = client.script_load(SCRIPT)
    kwargs = client.get_connection_kwargs()
    ours, theirs = RoundTrip(client), RoundTrip(client)
    queue(ours, sha)
    queue(theirs, sha)
    target = AsyncRedis(_url_of(client), timeout_s=2.0)
    assert run(target.execute(ours.command_stack)) == theirs.execute()
    assert kwargs["db"] != 0  # the fresh database was selected on connect, or the keys above would be missing


def test_error_replies_are_redis_py_exceptions_in_place_or_raised(client):
    target = AsyncRedis(_url_of(client), timeout_s=2.0)
    commands = [("EVALSHA", "0" * 40, 0), ("ZCOUNT", "caps:{u}:day", "-inf", "+inf")]

    async def both():
        return await target.execute(commands, raise_on_error=False), await _raises(target.execute(commands))

    replies, raised = run(both())
    assert isinstance(replies[0], redis.exceptions.NoScriptError) and replies[1] == 3
    assert isinstance(raised, redis.exceptions.NoScriptError)


def test_concurrent_round_trips_each_get_their_own_replies(client):
    target = AsyncRedis(_url_of(client), timeout_s=5.0)
    for i in range(300):
        client.set(f"k{i}", i)

    async def many():
        return await asyncio.gather(*(target.execute([("GET", f"k{i}"), ("INCR", f"n{i}")]) for i in range(300)))

    assert run(many()) == [[str(i).encode(), 1] for i in range(300)]
    assert client.client_list()  # the server is fine


def test_an_unreachable_redis_raises_connection_error_and_an_empty_trip_sends_nothing():
    from infra.redis_server import free_port

    target = AsyncRedis(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)
    assert run(target.execute([])) == []
    with pytest.raises(redis.exceptions.ConnectionError, match="cannot connect to Redis"):
        run(target.execute([("GET", "k")]))


def test_a_late_reply_raises_timeout_and_the_next_round_trip_reconnects(client):
    target = AsyncRedis(_url_of(client), timeout_s=0.1)
    client.set("k", "v")

    async def scenario():
        assert await target.execute([("GET", "k")]) == [b"v"]
        client.execute_command("CLIENT", "PAUSE", 400)  # Redis holds every client's commands for 400 ms
        late = await _raises(target.execute([("GET", "k")]))
        await asyncio.sleep(0.5)
        return late, await target.execute([("GET", "k")])

    late, after = run(scenario())
    assert isinstance(late, redis.exceptions.TimeoutError) and "within 100 ms" in str(late)
    assert after == [b"v"]


def test_a_killed_connection_fails_its_waiters_and_the_next_round_trip_reconnects(client):
    target = AsyncRedis(_url_of(client), timeout_s=2.0)

    async def scenario():
        [ours] = await target.execute([("CLIENT", "ID")])
        client.execute_command("CLIENT", "KILL", "ID", ours)
        await asyncio.sleep(0.05)  # the loop sees the close
        return ours, await target.execute([("CLIENT", "ID")])

    killed, [now] = run(scenario())
    assert now != killed


def test_a_client_used_from_a_new_event_loop_opens_its_own_connection(client):
    target = AsyncRedis(_url_of(client), timeout_s=2.0)
    first = run(target.execute([("CLIENT", "ID")]))  # asyncio.run: a loop of its own, closed after
    second = run(target.execute([("CLIENT", "ID")]))
    assert first != second
    target.close()  # its loop is closed already: the connection went with it, nothing to abort
    assert run(target.execute([("PING",)])) == [b"PONG"]


def test_a_wrong_password_is_refused_at_set_up(client):
    host, port = client.get_connection_kwargs()["host"], client.get_connection_kwargs()["port"]
    target = AsyncRedis(f"redis://nobody:wrong@{host}:{port}/0", timeout_s=1.0)
    with pytest.raises(redis.exceptions.ConnectionError, match="refused the connection set-up"):
        run(target.execute([("PING",)]))


async def _raises(coroutine) -> Exception | None:
    try:
        await coroutine
    except Exception as exc:  # noqa: BLE001 - returned for the assertion
        return exc
    return None


def _url_of(client: redis.Redis) -> str:
    kwargs = client.get_connection_kwargs()
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs['db']}"
