"""TLS to Redis: `rediss://` for one server, `rediss+cluster://` for a cluster, its options in the URL's query.

Managed Redis services (ElastiCache with in-transit encryption, Memorystore, Azure Cache) accept TLS only, so
every client the project opens speaks it when the URL asks: redis-py's (batch jobs, tools, Feast's online store)
and the decision path's own pipelined asyncio client (`serving.store.redis_async`). One set of options, named as
redis-py names its keyword arguments, so the same URL means the same thing to every client:

    rediss://:password@redis.internal:6380/0?ssl_ca_certs=/etc/hyperlift/redis-ca.pem
    rediss+cluster://:password@node1:6380,node2:6380?ssl_ca_certs=/etc/hyperlift/redis-ca.pem

- `ssl_ca_certs`: the CA bundle that signed the server's certificate (default: the system's trust store);
- `ssl_cert_reqs`: `required` (default), `optional` or `none` (no verification: tests and tunnels only);
- `ssl_check_hostname`: `true` (default when certificates are required) or `false`;
- `ssl_certfile`, `ssl_keyfile`: a client certificate, for servers that ask for one (`tls-auth-clients yes`).

Feast's connection string is comma separated, so none of these values may hold a comma.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode

CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
TLS_KEYS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")


class RedisTlsError(ValueError):
    """A TLS option of a Redis URL that cannot be used."""


@dataclass(frozen=True)
class TlsOptions:
    """How to verify the server (and present a client certificate), from a `rediss` URL's query."""

    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    cert_reqs: str = "required"
    check_hostname: bool | None = None  # None: when certificates are required

    @classmethod
    def from_query(cls, query: str) -> TlsOptions:
        """The options of a URL query (other keys, e.g. redis-py's socket_timeout, are left to their readers)."""
        values = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items() if k in TLS_KEYS}
        reqs = values.get("ssl_cert_reqs", "required").lower()
        if reqs not in CERT_REQS:
            raise RedisTlsError(f"ssl_cert_reqs={reqs!r}: use one of {', '.join(CERT_REQS)}")
        check = values.get("ssl_check_hostname")
        if check is not None and check.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise RedisTlsError(f"ssl_check_hostname={check!r}: use true or false")
        for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            if "," in values.get(key, ""):
                raise RedisTlsError(f"{key}={values[key]!r}: a path with a comma cannot pass through Feast's "
                                    "connection string; move the file")
        if ("ssl_keyfile" in values) != ("ssl_certfile" in values):
            raise RedisTlsError("ssl_certfile and ssl_keyfile go together (a client certificate and its key)")
        return cls(values.get("ssl_ca_certs") or None, values.get("ssl_certfile") or None,
                   values.get("ssl_keyfile") or None, reqs,
                   None if check is None else check.lower() in ("true", "1", "yes"))

    @property
    def verifies_hostname(self) -> bool:
        return self.cert_reqs == "required" if self.check_hostname is None else self.check_hostname

    def context(self) -> ssl.SSLContext:
        """An SSLContext with these options (the asyncio client's); a missing or unreadable file is named."""
        try:
            context = ssl.create_default_context(cafile=self.ca_certs)
            if self.certfile:
                context.load_cert_chain(self.certfile, self.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise RedisTlsError(f"cannot load the Redis TLS files ({self.ca_certs=}, {self.certfile=}): {exc}") from exc
        context.check_hostname = self.verifies_hostname and self.cert_reqs != "none"
        context.verify_mode = CERT_REQS[self.cert_reqs]
        return context

    def redis_kwargs(self) -> dict[str, object]:
        """redis-py's keyword arguments (Redis, RedisCluster) for these options."""
        out: dict[str, object] = {"ssl": True, "ssl_cert_reqs": self.cert_reqs,
                                  "ssl_check_hostname": self.verifies_hostname and self.cert_reqs != "none"}
        for key, value in (("ssl_ca_certs", self.ca_certs), ("ssl_certfile", self.certfile),
                           ("ssl_keyfile", self.keyfile)):
            if value:
                out[key] = value
        return out

    def query(self) -> str:
        """The options as a URL query (without `?`), for the per-node URLs of a cluster."""
        items = {k: v for k, v in self.redis_kwargs().items() if k != "ssl"}
        return urlencode({k: str(v).lower() if isinstance(v, bool) else v for k, v in items.items()})

    def feast_params(self) -> list[str]:
        """Feast's connection-string items (`key=value`, passed to redis-py as keyword arguments)."""
        return [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in self.redis_kwargs().items()]
