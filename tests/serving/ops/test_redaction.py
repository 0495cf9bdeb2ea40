"""What failures may say: a Redis error as its kind and class (its text names the server, the command and the keys).
URLs printed without their password: tests/infra (infra.settings.masked_url, the launcher)."""

from __future__ import annotations

import pytest
import redis

from serving.ops.redaction import redis_failure


def test_a_redis_error_is_told_without_address_command_or_keys(online_redis_url):
    client = redis.Redis.from_url(online_redis_url)
    client.set("hyperlift:secret-key", "v")
    pipe = client.pipeline(transaction=False)
    pipe.xadd("hyperlift:secret-key", {"a": 1})
    with pytest.raises(redis.exceptions.ResponseError) as refused:
        pipe.execute()
    assert "hyperlift:secret-key" in str(refused.value)  # what used to reach the 503 bodies
    assert redis_failure(refused.value) == "Redis refused the command (ResponseError)"
    down = redis.Redis.from_url("redis://:hunter2@127.0.0.1:1/0", socket_connect_timeout=0.2, retry=None)
    with pytest.raises(redis.exceptions.ConnectionError) as failed:
        down.get("hyperlift:secret-key")
    assert "127.0.0.1:1" in str(failed.value)
    assert redis_failure(failed.value) == "Redis connection failed (ConnectionError)"
    assert redis_failure(redis.exceptions.TimeoutError("Timeout reading from 10.0.0.5:6379")) == (
        "Redis timed out (TimeoutError)"
    )
    assert redis_failure(redis.exceptions.AuthenticationError("invalid password")) == (
        "Redis connection failed (AuthenticationError)"
    )
