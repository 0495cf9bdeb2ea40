"""TLS to Redis (infra/redis_tls.py): the URL's options, and every client the project opens — redis-py's, the
cluster's per-node URLs, Feast's connection string and the decision path's asyncio client — against a real
TLS-only redis-server that also asks for a client certificate."""

from __future__ import annotations

import asyncio

import pytest
import redis

from infra.redis_cluster import feast_online_store, parse_cluster_url, redis_client
from infra.redis_tls import RedisTlsError, TlsOptions
from infra.settings import feast_redis_connection_string
from serving.store.redis_async import AsyncRedis
from tests.infra.redis_tls import tls_redis  # noqa: F401  (the server fixture)


def test_options_from_the_query_and_what_each_client_gets():
    options = TlsOptions.from_query("ssl_ca_certs=/etc/ca.pem&socket_timeout=1&ssl_check_hostname=false")
    assert options == TlsOptions(ca_certs="/etc/ca.pem", check_hostname=False)
    assert options.redis_kwargs() == {"ssl": True, "ssl_cert_reqs": "required", "ssl_check_hostname": False,
                                      "ssl_ca_certs": "/etc/ca.pem"}
    assert TlsOptions.from_query("ssl_cert_reqs=none").redis_kwargs()["ssl_check_hostname"] is False
    assert (feast_redis_connection_string("rediss://:pw@h:6380/2?ssl_ca_certs=/etc/ca.pem")
            == "h:6380,db=2,password=pw,ssl=true,ssl_cert_reqs=required,ssl_check_hostname=true,ssl_ca_certs=/etc/ca.pem")
    address = parse_cluster_url("rediss+cluster://:pw@h1:7000,h2:7000?ssl_ca_certs=/etc/ca.pem")
    assert address.masked() == "rediss+cluster://:***@h1:7000,h2:7000"
    assert address.node_url("h2", 7000) == ("rediss://:pw@h2:7000/0?ssl_cert_reqs=required&ssl_check_hostname=true"
                                            "&ssl_ca_certs=%2Fetc%2Fca.pem")
    assert parse_cluster_url("redis+cluster://h1:7000").node_url("h1", 7000) == "redis://h1:7000/0"
    assert feast_online_store("rediss+cluster://h1:7000?ssl_cert_reqs=none") == (
        "redis_cluster", "h1:7000,ssl=true,ssl_cert_reqs=none,ssl_check_hostname=false")


@pytest.mark.parametrize(("query", "message"), [
    ("ssl_cert_reqs=maybe", "ssl_cert_reqs='maybe': use one of required, optional, none"),
    ("ssl_ca_certs=/a,b.pem", "a path with a comma cannot pass through Feast's connection string"),
    ("ssl_certfile=/c.pem", "ssl_certfile and ssl_keyfile go together"),
    ("ssl_check_hostname=perhaps", "ssl_check_hostname='perhaps': use true or false"),
])
def test_unusable_options_are_refused_with_what_to_write(query, message):
    with pytest.raises(RedisTlsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TlsOptions.from_query(query)


def test_redis_py_clients_speak_tls_with_the_urls_options(tls_redis):
    client = redis_client(tls_redis.url(db=3), timeout_s=5.0)
    client.set("tls:probe", "over tls")
    assert client.get("tls:probe") == b"over tls"
    assert redis_client(tls_redis.url(db=3)).get("tls:probe") == b"over tls"
    with pytest.raises(redis.exceptions.ConnectionError):  # the server asks for a client certificate
        redis_client(tls_redis.url(db=3, client_cert=False), timeout_s=5.0).ping()
    other_ca = str(tls_redis.certs / "server.pem")  # not the CA that signed the server's certificate
    with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"):
        redis_client(tls_redis.url(db=3, ca=other_ca), timeout_s=5.0).ping()
    client.flushdb()


def test_the_decision_paths_async_client_speaks_tls(tls_redis):
    async def run(url: str) -> list:
        client = AsyncRedis(url, timeout_s=5.0)
        try:
            return await client.execute([("SET", "tls:async", "1"), ("INCR", "tls:async"), ("GET", "tls:async")])
        finally:
            client.close()

    assert asyncio.run(run(tls_redis.url(db=4))) == [b"OK", 2, b"2"]
    other_ca = str(tls_redis.certs / "server.pem")
    with pytest.raises(redis.exceptions.ConnectionError, match="cannot connect to Redis.*CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(run(tls_redis.url(db=4, ca=other_ca)))
    with pytest.raises(redis.exceptions.ConnectionError):  # no client certificate: the server closes the connection
        asyncio.run(run(tls_redis.url(db=4, client_cert=False)))
    # Verification off: the handshake succeeds whatever signed the certificate (tunnels, tests).
    assert asyncio.run(run(tls_redis.url(db=4, ca=other_ca, ssl_cert_reqs="none"))) == [b"OK", 2, b"2"]
