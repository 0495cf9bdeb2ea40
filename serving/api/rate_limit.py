"""Per-client rate limits: a token bucket per client key, ahead of everything (the decision fast path included).

A client may make `rate_per_s` requests a second on average and `burst` at once; beyond, it is answered 429 with
`Retry-After` (whole seconds until it has a token again) and a JSON `detail`, before its body is read. The key of a
client comes from `key_of(scope)`: by default the id of its valid API key, else its address (with uvicorn's
--proxy-headers, the one the trusted proxy reports); an invalid token never gets a bucket of its own. Probes and
scrapes (/healthz, /readyz, /metrics) are never limited.

Buckets live in the worker's memory: with N workers a client gets up to N times the rate (its connections are
spread over them). At most `max_keys` buckets are kept, the least recently seen forgotten first; a forgotten client
starts again with a full bucket, which is where an idle one would be anyway once `burst / rate_per_s` has passed.
Runs on the event loop only (no lock): one dictionary look-up and a few float operations per request.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.api.auth import client_id
from serving.core.config import ServingSettings
from serving.ops.api_keys import ANONYMOUS
from serving.ops.metrics import ServiceMetrics

UNLIMITED = frozenset({"/healthz", "/readyz", "/metrics"})
FAMILIES = frozenset({"decisions", "outcomes", "events", "consent", "admin", "stats"})


def client_key(scope: Scope) -> str:
    """The client's key: 'key:' and the id of its valid API key (`serving.api.auth.client_id`), else 'addr:' and its
    address. A made-up token is no key: it cannot buy a bucket of its own, it shares its address's."""
    key_id = client_id(scope)
    if key_id != ANONYMOUS:
        return "key:" + key_id
    client = scope.get("client")
    return "addr:" + (client[0] if client else "unknown")


def route_family(path: str) -> str:
    """The metric label of a path: /v1/<family>/... for the service's routes, else 'other' (no raw paths)."""
    parts = path.split("/", 3)
    return parts[2] if len(parts) > 2 and parts[1] == "v1" and parts[2] in FAMILIES else "other"


class TokenBuckets:
    """A token bucket per key, `burst` tokens each, refilled at `rate_per_s`; at most `max_keys` kept (LRU)."""

    def __init__(self, rate_per_s: float, burst: int, max_keys: int, clock: Callable[[], float] = time.monotonic):
        if rate_per_s <= 0 or burst < 1 or max_keys < 1:
            raise ValueError(f"rate_per_s must be > 0, burst and max_keys >= 1; got {rate_per_s}, {burst}, {max_keys}")
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # key → [tokens, when counted], oldest first

    @classmethod
    def from_settings(cls, settings: ServingSettings) -> TokenBuckets | None:
        """The buckets the settings ask for, or None when rate limiting is off (rate_limit_per_s = 0)."""
        if settings.rate_limit_per_s == 0:
            return None
        return cls(settings.rate_limit_per_s, settings.rate_limit_burst, settings.rate_limit_max_keys)

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Take a token for `key`: 0.0 when there was one, else the seconds until there is one (nothing taken)."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
            self._buckets[key] = [self.burst - 1.0, now]
            return 0.0
        self._buckets.move_to_end(key)
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate_per_s)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate_per_s


class RateLimit:
    """ASGI middleware: 429 with Retry-After for a client over its rate, before anything else reads the request.

    `buckets` None: built from the runtime's settings once the app has started (its lifespan builds the runtime),
    and off when they say so; `metrics` None: the runtime's. `key_of` maps a request's scope to its client key.
    """

    def __init__(
        self, app: ASGIApp, buckets: TokenBuckets | None = None, key_of: Callable[[Scope], str] = client_key,
        metrics: ServiceMetrics | None = None,
    ):
        self.app = app
        self.state = getattr(app, "state", None)  # the FastAPI app's, as DecisionFastPath exposes it
        self.buckets = buckets
        self.key_of = key_of
        self.metrics = metrics
        self._from_runtime = (buckets is None, metrics is None)  # what each start of the app sets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self.buckets is not None and scope["path"] not in UNLIMITED:
                wait_s = self.buckets.take(self.key_of(scope))
                if wait_s:
                    await self._refuse(scope, send, self.buckets, wait_s)
                    return
        elif scope["type"] == "lifespan" and any(self._from_runtime):
            await self.app(scope, receive, self._configure_on_start(send))
            return
        await self.app(scope, receive, send)

    def _configure_on_start(self, send: Send) -> Send:
        """`send`, which also reads the runtime's settings and metrics when the app reports its start."""

        async def started(message: Message) -> None:
            runtime = getattr(self.state, "runtime", None)
            if message["type"] == "lifespan.startup.complete" and runtime is not None:
                buckets, metrics = self._from_runtime
                if buckets:
                    self.buckets = TokenBuckets.from_settings(runtime.settings)
                if metrics:
                    self.metrics = runtime.service.metrics
            await send(message)

        return started

    async def _refuse(self, scope: Scope, send: Send, buckets: TokenBuckets, wait_s: float) -> None:
        retry_after = max(1, math.ceil(wait_s))
        if self.metrics is not None:
            self.metrics.rate_limited.labels(route_family(scope["path"])).inc()
        body = json.dumps({"detail": (
            f"rate limit exceeded: at most {buckets.rate_per_s:g} requests/s per client (bursts of "
            f"{buckets.burst:g}); retry after {retry_after} s"
        )}).encode()
        await send({"type": "http.response.start", "status": 429, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry_after).encode()),
        ]})
        await send({"type": "http.response.body", "body": body})
