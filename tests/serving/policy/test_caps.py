import random
import socket
import threading
from collections.abc import Iterator

import pytest
import redis

from serving.policy.caps import CapRule, FrequencyCaps

T0 = 1_714_521_600.0  # 2024-05-01 00:00 UTC
CONTROL = "no_action"
HOURLY = CapRule("any_per_hour", window_s=3600, limit=3)


@pytest.fixture
def client(redis_databases) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_databases.fresh())
    yield client
    client.close()


def test_exactly_limit_reserves_succeed_in_a_window_then_one_more_once_it_slides(client):
    caps = FrequencyCaps(client, [HOURLY], CONTROL)
    assert [caps.reserve("u1", "pct10", f"d{i}", now=T0 + 10 * i) for i in range(3)] == [True, True, True]
    assert not caps.reserve("u1", "push", "d3", now=T0 + 30)
    assert not caps.reserve("u1", "push", "d4", now=T0 + 3599.999)  # the first show is still inside the window
    assert caps.reserve("u1", "push", "d5", now=T0 + 3600)  # ... and now it is not
    assert not caps.reserve("u1", "push", "d6", now=T0 + 3600)
    assert caps.count("u1", "any_per_hour", now=T0 + 3600) == 3
    assert caps.reserve("u2", "pct10", "e0", now=T0 + 30)  # another user has a window of their own


def test_rules_scoped_to_actions_count_and_limit_only_those_actions(client):
    rules = [
        CapRule("pct10_per_day", window_s=86_400, limit=1, actions=frozenset({"pct10"})),
        CapRule("push_per_day", window_s=86_400, limit=2, actions=frozenset({"push"})),
    ]
    caps = FrequencyCaps(client, rules, CONTROL)
    assert caps.reserve("u1", "pct10", "d0", now=T0)
    assert not caps.reserve("u1", "pct10", "d1", now=T0)
    assert [caps.reserve("u1", "push", f"p{i}", now=T0) for i in range(3)] == [True, True, False]
    assert all(caps.reserve("u1", "banner", f"b{i}", now=T0) for i in range(5))  # covered by no rule
    assert caps.count("u1", "pct10_per_day", now=T0) == 1
    assert caps.count("u1", "push_per_day", now=T0) == 2
    assert caps.blocked("u1", ["pct10", "push", "banner", CONTROL], now=T0) == {"pct10", "push"}


def test_the_control_is_never_capped_or_counted(client):
    caps = FrequencyCaps(client, [CapRule("one_per_day", window_s=86_400, limit=1)], CONTROL)
    assert all(caps.reserve("u1", CONTROL, f"c{i}", now=T0) for i in range(10))
    assert caps.count("u1", "one_per_day", now=T0) == 0 and client.keys("*") == []
    assert caps.reserve("u1", "pct10", "d0", now=T0)
    assert caps.blocked("u1", ["pct10", "push", CONTROL], now=T0) == {"pct10", "push"}
    assert caps.reserve("u1", CONTROL, "c10", now=T0)


def test_blocked_agrees_with_reserve_through_a_random_history(client):
    rules = [
        CapRule("per_minute", window_s=60, limit=2),
        CapRule("pct10_per_hour", window_s=3600, limit=3, actions=frozenset({"pct10", "pct20"})),
        CapRule("push_per_10min", window_s=600, limit=1, actions=frozenset({"push"})),
    ]
    caps = FrequencyCaps(client, rules, CONTROL)
    actions = ["pct10", "pct20", "push", "banner", CONTROL]
    rng = random.Random(7)
    now, outcomes = T0, []
    for step in range(400):
        now += rng.choice([0.0, 1.0, 7.5, 30.0, 61.0, 400.0])
        blocked = caps.blocked("u1", actions, now=now)
        action = rng.choice(actions)
        reserved = caps.reserve("u1", action, f"d{step}", now=now)
        assert reserved == (action not in blocked), (step, action, blocked)
        assert CONTROL not in blocked
        outcomes.append(reserved)
    assert outcomes.count(False) > 50 and outcomes.count(True) > 50  # both branches were exercised


def test_a_refused_reserve_records_nothing_in_any_rule(client):
    rules = [
        CapRule("any_per_hour", window_s=3600, limit=2),
        CapRule("pct10_per_day", window_s=86_400, limit=5, actions=frozenset({"pct10"})),
    ]
    caps = FrequencyCaps(client, rules, CONTROL)
    assert caps.reserve("u1", "push", "d0", now=T0) and caps.reserve("u1", "push", "d1", now=T0)
    assert not caps.reserve("u1", "pct10", "d2", now=T0)  # the hourly rule is full; the daily one had room
    assert caps.count("u1", "pct10_per_day", now=T0) == 0
    assert client.exists(caps.key("u1", rules[1])) == 0

    once = CapRule("pct10_once", window_s=86_400, limit=1, actions=frozenset({"pct10"}))
    caps = FrequencyCaps(client, [rules[0], once], CONTROL)
    assert caps.reserve("u2", "pct10", "e0", now=T0)
    assert not caps.reserve("u2", "pct10", "e1", now=T0)  # the daily rule is full; the hourly one had room
    assert caps.count("u2", "any_per_hour", now=T0) == 1
    assert client.zrange(caps.key("u2", rules[0]), 0, -1) == [b"e0"]


def test_a_retried_token_is_one_show_even_at_the_limit(client):
    caps = FrequencyCaps(client, [HOURLY], CONTROL)
    assert caps.reserve("u1", "pct10", "d0", now=T0)
    assert caps.reserve("u1", "pct10", "d0", now=T0 + 5)
    assert caps.reserve("u1", "pct10", "d1", now=T0) and caps.reserve("u1", "pct10", "d2", now=T0)
    assert caps.reserve("u1", "pct10", "d2", now=T0 + 5)  # the retry of a recorded show needs no room
    assert not caps.reserve("u1", "pct10", "d3", now=T0 + 5)
    assert client.zrange(caps.key("u1", HOURLY), 0, -1, withscores=True) == [
        (b"d0", T0 * 1000), (b"d1", T0 * 1000), (b"d2", T0 * 1000)  # a retry does not move the show in time
    ]


def test_keys_share_the_users_hash_tag_and_expire_with_the_window(client):
    rules = [HOURLY, CapRule("pct10_per_day", window_s=86_400, limit=1, actions=frozenset({"pct10"}))]
    caps = FrequencyCaps(client, rules, CONTROL, prefix="hl:caps")
    assert caps.reserve("user:42", "pct10", "d0")
    assert sorted(client.keys("*")) == [b"hl:caps:{user:42}:any_per_hour", b"hl:caps:{user:42}:pct10_per_day"]
    assert 3_500_000 < client.pttl(b"hl:caps:{user:42}:any_per_hour") <= 3_600_000
    assert 86_300_000 < client.pttl(b"hl:caps:{user:42}:pct10_per_day") <= 86_400_000


def test_the_clock_is_used_when_no_time_is_given(client):
    clock = [T0]
    caps = FrequencyCaps(client, [CapRule("one_per_minute", window_s=60, limit=1)], CONTROL, clock=lambda: clock[0])
    assert caps.reserve("u1", "pct10", "d0") and not caps.reserve("u1", "pct10", "d1")
    assert caps.blocked("u1", ["pct10"]) == {"pct10"}
    clock[0] = T0 + 60
    assert caps.blocked("u1", ["pct10"]) == set() and caps.reserve("u1", "pct10", "d1")


def test_reserve_survives_a_flushed_script_cache(client):
    """After a Redis restart the script is gone; redis-py loads it again on NOSCRIPT."""
    caps = FrequencyCaps(client, [HOURLY], CONTROL)
    assert caps.reserve("u1", "pct10", "d0", now=T0)
    client.script_flush()
    assert caps.reserve("u1", "pct10", "d1", now=T0)
    assert caps.count("u1", "any_per_hour", now=T0) == 2


def test_sixteen_threads_get_exactly_limit_reservations_for_one_user(client):
    caps = FrequencyCaps(client, [CapRule("five_per_hour", window_s=3600, limit=5)], CONTROL)
    start = threading.Barrier(16)
    results: list[bool] = []
    lock = threading.Lock()

    def hammer(thread: int) -> None:
        start.wait()
        mine = [caps.reserve("hot_user", "pct10", f"t{thread}-{i}", now=T0) for i in range(20)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 320 and results.count(True) == 5
    assert client.zcard(caps.key("hot_user", caps.rules[0])) == 5


def test_redis_errors_propagate_to_the_caller():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = redis.Redis(port=port, socket_timeout=0.05, socket_connect_timeout=0.05, retry=None)
    caps = FrequencyCaps(closed, [HOURLY], CONTROL)
    with pytest.raises(redis.exceptions.RedisError):
        caps.blocked("u1", ["pct10"], now=T0)
    with pytest.raises(redis.exceptions.RedisError):
        caps.reserve("u1", "pct10", "d0", now=T0)
    assert caps.blocked("u1", [CONTROL], now=T0) == set()  # nothing to check: no round trip at all


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: CapRule("w", window_s=0, limit=1), "window_s must be >= 1"),
        (lambda: CapRule("l", window_s=60, limit=0), "limit must be >= 1"),
        (lambda: CapRule("", window_s=60, limit=1), "name must be non-empty"),
        (lambda: CapRule("e", window_s=60, limit=1, actions=frozenset()), "None \\(every action\\) or non-empty"),
        (lambda: FrequencyCaps(None, [HOURLY, HOURLY], CONTROL), "duplicate cap rule names: \\['any_per_hour'\\]"),
        (
            lambda: FrequencyCaps(None, [CapRule("c", 60, 1, frozenset({CONTROL, "pct10"}))], CONTROL),
            "control 'no_action' is never capped; remove it from rules \\['c'\\]",
        ),
        (lambda: FrequencyCaps(None, [HOURLY], CONTROL, prefix="caps:{x}"), "key prefix must be non-empty and free of braces"),
    ],
)
def test_configuration_errors_say_what_is_wrong(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_actions_given_as_a_string_or_a_user_key_with_braces_are_refused(client):
    with pytest.raises(TypeError, match="not the string 'pct10'"):
        CapRule("s", window_s=60, limit=1, actions="pct10")
    assert CapRule("s", window_s=60, limit=1, actions={"pct10"}).actions == frozenset({"pct10"})
    caps = FrequencyCaps(client, [HOURLY], CONTROL)
    with pytest.raises(ValueError, match="free of braces"):
        caps.reserve("u{1}", "pct10", "d0", now=T0)


def test_release_returns_the_slot_to_every_rule(redis_databases):
    client = redis.Redis.from_url(redis_databases.fresh())
    caps = FrequencyCaps(
        client, [CapRule("day", 86_400, 1), CapRule("push_week", 604_800, 1, frozenset({"push"}))], "none"
    )
    assert caps.reserve("u1", "push", "t1", now=1_000.0)
    assert not caps.reserve("u1", "push", "t2", now=1_001.0)
    caps.release("u1", "push", "t1")
    assert caps.count("u1", "day", now=1_002.0) == 0 and caps.count("u1", "push_week", now=1_002.0) == 0
    assert caps.reserve("u1", "push", "t3", now=1_003.0)


def test_pipelined_reads_and_reservations_agree_with_the_direct_calls(redis_databases):
    client = redis.Redis.from_url(redis_databases.fresh())
    caps = FrequencyCaps(client, [CapRule("day", 86_400, 2)], "none")
    pipe = client.pipeline(transaction=False)
    first = caps.queue_reserve(pipe, "u1", "push", "t1", now=10.0)
    second = caps.queue_reserve(pipe, "u1", "push", "t2", now=11.0)
    third = caps.queue_reserve(pipe, "u1", "push", "t3", now=12.0)
    replies = pipe.execute(raise_on_error=False)
    assert [first(replies), second(replies), third(replies)] == [True, True, False]
    pipe = client.pipeline(transaction=False)
    blocked = caps.queue_blocked(pipe, "u1", ["none", "push"], now=13.0)
    assert blocked(pipe.execute()) == {"push"} == caps.blocked("u1", ["none", "push"], now=13.0)


def test_pipelined_reservation_survives_a_flushed_script_cache(redis_databases):
    client = redis.Redis.from_url(redis_databases.fresh())
    caps = FrequencyCaps(client, [CapRule("day", 86_400, 1)], "none")
    caps.load_scripts()
    client.script_flush()  # what a Redis restart does
    pipe = client.pipeline(transaction=False)
    reserve = caps.queue_reserve(pipe, "u1", "push", "t1", now=10.0)
    assert reserve(pipe.execute(raise_on_error=False)) is True
    assert caps.count("u1", "day", now=11.0) == 1
