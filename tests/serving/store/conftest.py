"""A redis-server of the test's own, for tests that stop, kill and restart it."""

import pytest

from infra.redis_server import EmbeddedRedis


@pytest.fixture
def own_redis(tmp_path):
    """A fresh, non-persistent redis-server (a kill and a start bring it back empty)."""
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
