"""The online-store circuit breaker (serving/ops/breaker.py): opening, one count per failure episode, the half-open
trial when no probe runs, and the probe that closes it as soon as Redis answers (a real Redis, paused)."""

import asyncio
import contextvars
import threading
import time

import pytest
import redis

from infra.redis_server import EmbeddedRedis
from serving.ops.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from serving.ops.metrics import ServiceMetrics
from serving.store.redis_async import AsyncRedis


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def failed_call(breaker: CircuitBreaker) -> bool:
    """One call of its own (its own context, as each request's task has): admitted, then failed; whether admitted."""

    def call() -> bool:
        if not breaker.allow():
            return False
        breaker.record_failure()
        return True

    return contextvars.Context().run(call)


def test_opens_after_consecutive_failures_and_refuses_calls():
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=5, clock=Clock())
    for _ in range(2):
        assert failed_call(breaker)
    assert breaker.state == CLOSED
    breaker.record_success()  # a success resets the count
    for _ in range(3):
        assert failed_call(breaker)
    assert breaker.state == OPEN and breaker.opened == 1
    assert not breaker.allow()
    assert breaker.failures == {"counted": 5, "same_episode": 0, "while_open": 0}


def test_calls_failing_together_in_one_stall_count_once():
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=5, clock=Clock())
    calls = [contextvars.Context() for _ in range(8)]  # eight requests in flight on the one connection
    assert all(call.run(breaker.allow) for call in calls)
    for call in calls:  # the stall fails them all at once
        call.run(breaker.record_failure)
    assert breaker.state == CLOSED
    assert breaker.failures == {"counted": 1, "same_episode": 7, "while_open": 0}
    assert failed_call(breaker)  # admitted after the counted failure: the stall outlasted it, a second episode
    assert breaker.state == OPEN and breaker.opened == 1


def test_a_success_between_episodes_resets_the_count():
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=5, clock=Clock())
    assert failed_call(breaker)
    contextvars.Context().run(lambda: breaker.allow() and breaker.record_success())
    assert failed_call(breaker)
    assert breaker.state == CLOSED


def test_a_failure_with_no_admission_in_its_context_counts():
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=5, clock=Clock())
    contextvars.Context().run(breaker.record_failure)
    contextvars.Context().run(breaker.record_failure)
    assert breaker.state == OPEN


def test_failures_of_calls_admitted_before_it_opened_neither_count_nor_extend_the_cooldown():
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5, clock=clock)
    straggler = contextvars.Context()
    assert straggler.run(breaker.allow)
    assert failed_call(breaker)
    assert breaker.state == OPEN
    clock.now = 4.0
    straggler.run(breaker.record_failure)  # the old rule re-opened it here, for another full cooldown
    refused = contextvars.Context()
    assert not refused.run(breaker.allow)
    refused.run(breaker.record_failure)  # e.g. the same request's reservation round trip
    assert breaker.opened == 1 and breaker.failures["while_open"] == 2
    clock.now = 5.0
    assert breaker.allow() and breaker.state == HALF_OPEN


def test_half_open_lets_one_trial_through_and_closes_on_success():
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5, clock=clock)
    assert failed_call(breaker)
    clock.now = 4.9
    assert not breaker.allow()
    clock.now = 5.0
    assert breaker.allow() and breaker.state == HALF_OPEN
    assert not contextvars.Context().run(breaker.allow)  # only one trial at a time
    breaker.record_success()
    assert breaker.state == CLOSED and breaker.allow()


def test_a_trial_that_never_reports_is_replaced_after_a_cooldown():
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5, clock=clock)
    assert failed_call(breaker)
    clock.now = 5.0
    assert contextvars.Context().run(breaker.allow)  # its request then fails on a bug: no success, no failure
    clock.now = 9.9
    assert not contextvars.Context().run(breaker.allow)
    clock.now = 10.0
    assert contextvars.Context().run(breaker.allow) and breaker.state == HALF_OPEN


def test_failed_trial_opens_again_for_a_full_cooldown():
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=5, clock=clock)
    assert failed_call(breaker) and failed_call(breaker)
    clock.now = 6.0
    assert failed_call(breaker)  # the trial
    assert breaker.state == OPEN and breaker.opened == 2
    clock.now = 10.9
    assert not breaker.allow()
    clock.now = 11.0
    assert breaker.allow()


def test_only_one_of_many_threads_gets_the_trial():
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=1, clock=clock)
    breaker.record_failure()
    clock.now = 2.0
    allowed = []
    threads = [threading.Thread(target=lambda: allowed.append(breaker.allow())) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 1


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="failure_threshold must be >= 1"):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError, match="probe_interval_s > 0"):
        CircuitBreaker(probe_interval_s=0)


class Dependency:
    """What the probe reaches: down for its first `down_for` probes."""

    def __init__(self, down_for: int):
        self.down_for, self.probed = down_for, 0

    async def ping(self) -> None:
        self.probed += 1
        if self.probed <= self.down_for:
            raise redis.exceptions.ConnectionError("connection refused")


def test_a_probe_closes_the_breaker_without_a_trial_call_and_while_it_probes_the_cooldown_does_not_apply():
    clock = Clock()
    dependency = Dependency(down_for=3)
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5, clock=clock, probe=dependency.ping,
                             probe_interval_s=0.01)

    async def scenario() -> list[bool]:
        assert failed_call(breaker)
        assert breaker.state == OPEN and breaker.probing
        clock.now = 100.0  # far past the cooldown: still no trial call while the probe runs
        allowed = [contextvars.Context().run(breaker.allow)]
        while breaker.state == OPEN:
            await asyncio.sleep(0.005)
        return allowed

    assert asyncio.run(scenario()) == [False]
    assert breaker.state == CLOSED and not breaker.probing
    assert breaker.probes == {"answered": 1, "failed": 3} and dependency.probed == 4
    assert breaker.closed_by_probe == 1 and breaker.opened == 1


def test_a_probe_that_breaks_falls_back_to_the_cooldown_and_a_trial_call(caplog):
    clock = Clock()

    async def broken() -> None:
        raise KeyError("a bug in the probe")

    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5, clock=clock, probe=broken, probe_interval_s=0.01)

    async def scenario() -> None:
        assert failed_call(breaker)
        while breaker.probing:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0)  # the done callback

    asyncio.run(scenario())
    assert "circuit breaker probe failed unexpectedly" in caplog.text
    assert breaker.state == OPEN and not breaker.allow()
    clock.now = 5.0
    assert breaker.allow() and breaker.state == HALF_OPEN


def test_its_counts_are_exported_as_metrics():
    metrics = ServiceMetrics()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5, clock=Clock())
    metrics.watch_breaker(breaker)
    straggler = contextvars.Context()
    straggler.run(breaker.allow)
    assert failed_call(breaker)
    straggler.run(breaker.record_failure)
    assert metrics.total("hyperlift_feature_store_breaker_openings_total") == 1
    assert metrics.total("hyperlift_feature_store_breaker_failures_total", kind="counted") == 1
    assert metrics.total("hyperlift_feature_store_breaker_failures_total", kind="while_open") == 1
    assert metrics.total("hyperlift_feature_store_breaker_probes_total") == 0


@pytest.fixture
def paused_redis(tmp_path):
    """(async client with a 100 ms bound, sync client to pause the server) on a redis-server of this test's own."""
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    admin = redis.Redis.from_url(url)
    admin.set("k", "v")
    try:
        yield AsyncRedis(url, timeout_s=0.1), admin
    finally:
        admin.close()
        server.stop()


def test_with_redis_paused_one_stall_counts_once_and_the_probe_closes_the_breaker_when_redis_answers(paused_redis):
    client, admin = paused_redis
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=60, probe=lambda: client.execute([("PING",)]),
                             probe_interval_s=0.05)

    async def call() -> str:
        if not breaker.allow():
            return "refused"
        try:
            await client.execute([("GET", "k")])
        except redis.exceptions.RedisError:
            breaker.record_failure()
            return "failed"
        breaker.record_success()
        return "ok"

    async def scenario() -> tuple[list[str], float]:
        assert await call() == "ok"
        admin.execute_command("CLIENT", "PAUSE", 300)  # one stall, eight decisions in flight
        stalled = await asyncio.gather(*(call() for _ in range(8)))
        assert breaker.state == CLOSED and breaker.failures["counted"] == 1
        await asyncio.sleep(0.4)
        assert await call() == "ok"
        admin.execute_command("CLIENT", "PAUSE", 1500)  # an outage: calls admitted after each failure fail too
        paused_at = time.monotonic()
        assert [await call(), await call(), await call()] == ["failed", "failed", "refused"]
        while breaker.state == OPEN and time.monotonic() - paused_at < 20:
            await asyncio.sleep(0.02)
        return stalled, time.monotonic() - paused_at

    stalled, closed_after_s = asyncio.run(scenario())
    assert stalled == ["failed"] * 8
    assert breaker.failures == {"counted": 3, "same_episode": 7, "while_open": 0}
    # closed by a probe once the pause was over, long before the 60 s cooldown
    assert breaker.state == CLOSED and breaker.closed_by_probe == 1 and breaker.opened == 1
    assert breaker.probes["answered"] == 1 and breaker.probes["failed"] >= 1
    assert 1.0 < closed_after_s < 20
