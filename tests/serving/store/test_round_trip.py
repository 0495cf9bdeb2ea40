"""RoundTrip (serving/store/round_trip.py) answers what redis-py's pipeline answers for the decision path's commands."""

import pytest
import redis

from serving.store.round_trip import RoundTrip
from tests.serving.decision.test_fallbacks import dead_client

SCRIPT = "return {tonumber(ARGV[1]) + 1, redis.call('GET', KEYS[1])}"


def seeded(redis_databases) -> redis.Redis:
    """A client of a fresh database holding a feature hash, a cap window and a budget counter."""
    client = redis.Redis.from_url(redis_databases.fresh(), retry=None)
    client.hset(b"user:\x00\x01", mapping={b"a": b"\x35\x00\x00\xc0\x3f", b"b": b""})
    client.zadd("caps:{u}:day", {"t1": 1000, "t2": 2000, "t3": 3000})
    client.set("budget:{d}:c1", 1500)
    return client


@pytest.fixture
def client(redis_databases) -> redis.Redis:
    return seeded(redis_databases)


def queue(pipe, sha: str) -> None:
    pipe.hmget(b"user:\x00\x01", [b"a", b"b", b"missing"])
    pipe.hmget(b"no-such-user", [b"a"])
    pipe.zcount("caps:{u}:day", "(1000", "+inf")
    pipe.mget(["budget:{d}:c1", "budget:{d}:c2"])
    pipe.evalsha(sha, 1, "budget:{d}:c1", 41)


def test_replies_equal_redis_py_pipeline(client):
    sha = client.script_load(SCRIPT)
    ours, theirs = RoundTrip(client), client.pipeline(transaction=False)
    queue(ours, sha)
    queue(theirs, sha)
    assert len(ours.command_stack) == len(theirs.command_stack) == 5
    replies = ours.execute()
    assert replies == theirs.execute()
    assert replies == [[b"\x35\x00\x00\xc0\x3f", b"", None], [None], 2, [b"1500", None], [42, b"1500"]]


def test_error_replies_are_returned_in_place_or_raised(client):
    pipe = RoundTrip(client)
    pipe.evalsha("0" * 40, 0)  # not loaded: NOSCRIPT
    pipe.zcount("caps:{u}:day", "-inf", "+inf")
    replies = pipe.execute(raise_on_error=False)
    assert isinstance(replies[0], redis.exceptions.NoScriptError) and replies[1] == 3
    with pytest.raises(redis.exceptions.NoScriptError):
        pipe.execute()
    assert client.ping()  # the connection went back to the pool in a usable state


def test_an_unreachable_redis_raises_redis_errors_and_an_empty_trip_sends_nothing():
    dead = dead_client()
    assert RoundTrip(dead).execute() == []
    pipe = RoundTrip(dead)
    pipe.mget(["k"])
    with pytest.raises(redis.exceptions.ConnectionError):
        pipe.execute()
