"""The decision service over TLS (REDIS_URL=rediss://…): the shop materialized through Feast's online store over
TLS, then the same decisions as on a plain server, on the asyncio path and the synchronous one, with the caps and
budgets counted and the decision log written — nothing falls back."""

from __future__ import annotations

import pytest
import redis
from fastapi.testclient import TestClient

from infra.redis_cluster import redis_client
from serving.core.schemas import DecisionRequest
from serving.main import create_app
from serving.store.decision_log import DECISION_STREAM
from serving.store.redis_async import AsyncRedis
from tests.feature_repo.factories import materialize_shop
from tests.infra.redis_tls import tls_redis  # noqa: F401  (the server fixture)
from tests.serving.conftest import SHOP
from tests.serving.decision.test_service_cluster import ask, serving


@pytest.fixture(scope="module")
def tls_world(served_world, tls_redis):
    """The served world's shop (same home, registry and champion) materialized into the TLS server too."""
    settings, plain_url, users = served_world
    url = tls_redis.url(db=1)
    redis_client(url).flushdb()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HYPERLIFT_HOME", str(settings.home))
        materialize_shop(settings, url, SHOP)
    return settings, plain_url, url, [int(u) for u in users["user_id"]]


def test_tls_serves_the_decisions_a_plain_server_serves(tls_world, monkeypatch, tmp_path):
    settings, plain_url, tls_url, users = tls_world
    monkeypatch.setenv("HYPERLIFT_HOME", str(settings.home))
    requests = [{"user_id": u, "surface": s} for u in users[:40] for s in ("home", "cart", "push")]
    answers = {}
    for name, url in (("plain", plain_url), ("tls", tls_url)):
        redis_client(url).delete(DECISION_STREAM)
        with TestClient(create_app(serving(url, tmp_path, name, log_decisions=True))) as api:
            service = api.app.state.runtime.service
            assert isinstance(service.async_client, AsyncRedis) and (service.async_client._tls is not None) == (
                name == "tls")
            answers[name] = [{k: r[k] for k in ("actions", "slate_propensity", "model", "fallback")}
                             for r in ask(api, requests)]
            sync = [service.decide(DecisionRequest(user_id=u, surface="push")).fallback for u in users[:10]]
            assert sync == [None] * 10
            assert service.trace.flush(30, wait_for_redis=True)
        assert redis_client(url).xlen(DECISION_STREAM) == len(requests) + 10
    assert answers["tls"] == answers["plain"]
    assert all(a["fallback"] is None for a in answers["tls"])
    assert sum(a["actions"][0]["action_id"] == "push_reminder" for a in answers["tls"]) > 5  # budgets were charged


def test_a_tls_cluster_serves_the_decisions_a_plain_server_serves(tls_world, tls_redis, monkeypatch, tmp_path):
    """rediss+cluster://: Feast's cluster store, the per-node asyncio connections and redis-py's RedisCluster, all
    over TLS, on three masters of Debian's redis-server with TLS on the client port and the cluster bus."""
    from infra.redis_cluster_server import LocalRedisCluster, NodeTls
    from serving.store.redis_cluster_async import AsyncRedisCluster

    settings, plain_url, _, users = tls_world
    monkeypatch.setenv("HYPERLIFT_HOME", str(settings.home))
    certs = tls_redis.certs
    tls = NodeTls(certs / "server.pem", certs / "server.key", certs / "ca.pem")
    with LocalRedisCluster(tmp_path / "cluster", masters=3, replicas=0, tls=tls) as cluster:
        assert cluster.url.startswith("rediss+cluster://")
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("HYPERLIFT_HOME", str(settings.home))
            materialize_shop(settings, cluster.url, SHOP)
        requests = [{"user_id": u, "surface": s} for u in users[:30] for s in ("home", "cart")]
        answers = {}
        for name, url in (("plain", plain_url), ("tls-cluster", cluster.url)):
            with TestClient(create_app(serving(url, tmp_path, name, log_decisions=True))) as api:
                service = api.app.state.runtime.service
                assert isinstance(service.async_client, AsyncRedisCluster) == (name == "tls-cluster")
                answers[name] = [{k: r[k] for k in ("actions", "slate_propensity", "model", "fallback")}
                                 for r in ask(api, requests)]
                assert service.trace.flush(30, wait_for_redis=True)
        assert answers["tls-cluster"] == answers["plain"]
        assert all(a["fallback"] is None for a in answers["tls-cluster"])
        # Every master holds some of the rows; the decision log reached its stream's master over TLS too.
        assert all(node.client().dbsize() > 0 for node in cluster.nodes)
        assert redis_client(cluster.url).xlen(DECISION_STREAM) == len(requests)
        with pytest.raises(redis.exceptions.ConnectionError):  # no plain-TCP port
            redis.Redis(host="127.0.0.1", port=cluster.nodes[0].port, socket_timeout=2, retry=None).ping()
