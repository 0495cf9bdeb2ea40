"""Redis as a Dagster resource: the online store's server (health checks, key counts) and the decision streams."""

from __future__ import annotations

import dagster as dg
import redis

from feature_repo.stream import QUARANTINE_STREAM
from infra.redis_cluster import is_cluster_url, redis_client
from serving.store.consent import CONSENT_STREAM
from serving.store.decision_log import DECISION_STREAM, DRAIN_GROUP, OUTCOME_STREAM


class RedisResource(dg.ConfigurableResource):
    """A connection to the Redis server that backs the Feast online store and carries the decision streams."""

    url: str
    decision_stream: str = DECISION_STREAM  # where the decision service logs its decisions
    outcome_stream: str = OUTCOME_STREAM  # where purchases and conversions are reported
    quarantine_stream: str = QUARANTINE_STREAM  # events refused by POST /v1/events, as received
    consent_stream: str = CONSENT_STREAM  # consent calls (POST /v1/consent), applied or not: the audit trail
    drain_group: str = DRAIN_GROUP  # consumer group of the drain into the lake

    def client(self) -> redis.Redis:
        """A client that fails fast with a clear message when the server (or cluster) is not reachable."""
        client = (redis_client(self.url, timeout_s=10, connect_timeout_s=2) if is_cluster_url(self.url)
                  else redis.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=10))
        try:
            client.ping()
        except redis.exceptions.ConnectionError as exc:
            raise ConnectionError(
                f"Redis at {self.url} is not reachable ({exc}); start it, or unset REDIS_URL and run through "
                "`python -m infra.launch -- ...` to use the embedded server"
            ) from exc
        return client
