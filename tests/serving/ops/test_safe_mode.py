"""Safe mode survives a Redis restart that lost it (the local copy writes it back), and the newest decision wins
between processes."""

import json

import pytest
import redis

from infra.redis_server import EmbeddedRedis
from serving.ops.safe_mode import SafeMode

KEY = "hyperlift:safe_mode"


@pytest.fixture
def server(tmp_path):
    """A non-persistent redis-server: killed and started again, it comes back empty."""
    own = EmbeddedRedis(tmp_path / "redis")
    own.start()
    yield own
    own.stop()


def switch(url: str, state_file) -> SafeMode:
    client = redis.Redis.from_url(url, socket_timeout=0.2, socket_connect_timeout=0.2, retry=None)
    return SafeMode(client, KEY, poll_s=60, state_file=state_file)


def stored(url: str) -> dict | None:
    raw = redis.Redis.from_url(url).get(KEY)
    return json.loads(raw) if raw else None


def test_safe_mode_survives_a_redis_crash_and_restart_that_lost_it(server, tmp_path):
    safe = switch(server.url, tmp_path / "safe_mode.json")
    safe.set(True, "incident 42")
    server.kill()
    safe.refresh()
    assert safe.enabled and safe.redis_ok is False  # Redis down: the last state holds
    server.start()  # empty: the switch is gone from Redis
    safe.refresh()
    assert safe.enabled and safe.reason == "incident 42" and safe.reasserted == 1
    assert stored(server.url)["enabled"] is True  # written back, so every other worker sees it again
    server.kill()
    server.start()
    restarted = switch(server.url, tmp_path / "safe_mode.json")  # a process starting after the second crash
    assert restarted.enabled  # from its local copy, before Redis is even read
    restarted.refresh()
    assert restarted.enabled and stored(server.url)["reason"] == "incident 42"


def test_the_newest_decision_wins_over_an_older_copy_in_either_place(server, tmp_path):
    here, there = switch(server.url, tmp_path / "a.json"), switch(server.url, tmp_path / "b.json")
    here.set(True, "incident")
    there.refresh()
    assert there.enabled and json.loads((tmp_path / "b.json").read_text())["enabled"] is True
    there.set(False, "resolved")
    older = {"enabled": False, "reason": "before the incident", "since": stored(server.url)["since"] - 3600}
    redis.Redis.from_url(server.url).set(KEY, json.dumps(older))  # a restart from an hour-old snapshot
    here.refresh()  # here has not seen "resolved" yet: it writes back the newest it knows, "incident"
    assert here.enabled and here.reasserted == 1 and stored(server.url)["reason"] == "incident"
    there.refresh()  # there knows "resolved", newer still: it writes that back
    assert not there.enabled and stored(server.url)["enabled"] is False and there.reasserted == 1
    here.refresh()
    assert not here.enabled and json.loads((tmp_path / "a.json").read_text())["reason"] == "resolved"


def test_a_record_written_before_the_enabled_field_reads_as_on(server, tmp_path):
    redis.Redis.from_url(server.url).set(KEY, json.dumps({"reason": "old", "since": 1.0}))
    safe = switch(server.url, tmp_path / "safe_mode.json")
    safe.refresh()
    assert safe.enabled and safe.reason == "old"
