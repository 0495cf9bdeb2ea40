"""Redis as a Dagster resource: the online store's server, for health checks and key counts."""

from __future__ import annotations

import dagster as dg
import redis


class RedisResource(dg.ConfigurableResource):
    """A connection to the Redis server that backs the Feast online store."""

    url: str

    def client(self) -> redis.Redis:
        """A client that fails fast with a clear message when the server is not reachable."""
        client = redis.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=10)
        try:
            client.ping()
        except redis.exceptions.ConnectionError as exc:
            raise ConnectionError(
                f"Redis at {self.url} is not reachable ({exc}); start it, or unset REDIS_URL and run through "
                "`python -m infra.launch -- ...` to use the embedded server"
            ) from exc
        return client
