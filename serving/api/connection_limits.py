"""Bounds on connections and slow clients, in the HTTP protocol uvicorn runs
(`uvicorn serving.main:app --http serving.api.connection_limits:BoundedHttpToolsProtocol`, as `make serve` does).

uvicorn's httptools protocol (0.55, the one `--http auto` picks) reads requests with no deadline: its only timer is
the keep-alive one, armed after a response and cancelled by the next byte, and there is none before the first
request. A client that connects and sends nothing, or a header byte now and then (slowloris), or its headers and
half its body, holds the connection, and the request task awaiting that body, as long as it likes (issue #13: 200
half-sent bodies held their connections for 75 s and more). `--limit-concurrency` is no bound on them: it counts
connections too, so once idle connections reach the limit every request of every client is answered 503.

This subclass adds, at no cost to a request that arrives whole in one read (its timer is armed only when a read ends
with a request incomplete; a connection arms one at its start):
- header timeout: a request's headers must be in `header_timeout_s` after the connection opened or the request's
  first byte; else 408 and the connection is closed (a connection that sent nothing is just closed);
- body timeout: its body must be in `body_timeout_s` after its headers; else 408 and close, and the app, awaiting the
  body, is told the client left (the decision fast path and BodyLimit then return without answering);
- `max_connections` per worker: one more connection is answered 503 and closed on arrival, while the connections
  already open are served as before;
- headers over MAX_HEADER_BYTES: 431 and close (httptools itself has no bound on them).
Each is counted (hyperlift_http_*, serving.ops.metrics.ConnectionStats). Idle keep-alive connections are still
closed by uvicorn's `--timeout-keep-alive`.

And one saving: uvicorn writes a response's status line and headers, then its body, in two `transport.write` calls,
so two send(2) calls and two TCP segments per answer (on loopback each send also runs the receiver's TCP input; the
pair was ~14 % of the worker's CPU samples at 500 decisions/s). Each request's cycle writes through a
`CoalescingTransport` that holds the head of a response with a Content-Length until its body's first write and sends
both in one write. `100 Continue` and responses without a Content-Length (chunked, streamed) go out as before.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Literal

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from serving.core.config import ServingSettings
from serving.ops.metrics import CONNECTION_STATS

UVICORN_OPTIONS = ("--http", "serving.api.connection_limits:BoundedHttpToolsProtocol", "--timeout-keep-alive", "5")
"""The uvicorn options the service runs with (`make serve` through demo.serve, the demos and the benches)."""
MAX_HEADER_BYTES = 65_536  # a request's headers are < 2 kB; 64 kB leaves room for long tokens and cookies
Part = Literal["headers", "body"]


class CoalescingTransport:
    """The transport as one connection's request cycles see it: the head of a response whose length is known (status
    line and headers, with Content-Length) waits for the body's first write and goes out with it in one write.
    Everything else is the connection's transport itself."""

    __slots__ = ("transport", "head")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self.head
        if head is not None:
            self.head = None
            self.transport.write(head + data)
        elif data[:9] == b"HTTP/1.1 " and data[9:12] != b"100" and b"\r\ncontent-length: " in data:
            self.head = data  # the cycle's next write is this response's body
        else:
            self.transport.write(data)

    def flush(self) -> None:
        """Send a held head (a response whose app ended without a body)."""
        if self.head is not None:
            head, self.head = self.head, None
            self.transport.write(head)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...: the transport's own
        return getattr(self.transport, name)


@dataclass(frozen=True)
class ConnectionLimits:
    """The protocol's bounds (ServingSettings: header_timeout_s, body_timeout_s, max_connections)."""

    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    max_header_bytes: int = MAX_HEADER_BYTES

    @classmethod
    def from_settings(cls, settings: ServingSettings) -> ConnectionLimits:
        """The bounds the settings ask for."""
        return cls(settings.header_timeout_s, settings.body_timeout_s, settings.max_connections)


@lru_cache(maxsize=1)
def limits_from_environment() -> ConnectionLimits:
    """The bounds of this process's ServingSettings, read once (at the first connection)."""
    return ConnectionLimits.from_settings(ServingSettings())


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body read timeouts, a connection cap and a header size bound."""

    limits: ClassVar[ConnectionLimits | None] = None  # None: from the environment's ServingSettings

    def __init__(
        self, config: Config, server_state: ServerState, app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.bounds = self.limits or limits_from_environment()
        self.refused = False
        self.timer: asyncio.TimerHandle | None = None
        self.waiting_for: Part = "headers"  # what the timer, when armed, waits for
        self.headers_pending = False  # between a request's first byte and the end of its headers
        self.body_pending = False  # between the end of its headers and the end of its body
        self.header_bytes = 0
        self.coalescing: CoalescingTransport | None = None  # the request cycles' transport (connection_made)

    # --------------------------------------------------------------- connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.bounds.max_connections:
            self.refused = True
            CONNECTION_STATS.refused += 1
            transport.write(self._answer(503, f"too many connections to this server (at most "
                                              f"{self.bounds.max_connections}); retry later"))
            transport.close()
            return
        super().connection_made(transport)
        self.coalescing = CoalescingTransport(transport)
        self._arm("headers", self.bounds.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.coalescing is not None:
            self.coalescing.head = None  # nowhere to send it
        if not self.refused:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self.headers_pending:
            self.header_bytes += len(data)
            if self.header_bytes > self.bounds.max_header_bytes:
                CONNECTION_STATS.headers_too_large += 1
                self._close_with(431, f"request headers over {self.bounds.max_header_bytes} bytes")
                return
        if self.timer is not None:
            return
        if self.headers_pending:
            self._arm("headers", self.bounds.header_timeout_s)
        elif self.body_pending:
            self._arm("body", self.bounds.body_timeout_s)
        elif self.timeout_keep_alive_task is None and (self.cycle is None or self.cycle.response_complete):
            # bytes between requests that start none (blank lines): they cancelled the keep-alive timer
            self._arm("headers", self.bounds.header_timeout_s)

    # --------------------------------------------------------------- parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.headers_pending, self.header_bytes = True, 0

    def on_headers_complete(self) -> None:
        self.headers_pending, self.body_pending = False, True
        if self.timer is not None:
            self._disarm()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.transport is self.transport:  # a new cycle (not an upgrade)
            cycle.transport = self.coalescing

    def on_message_complete(self) -> None:
        self.body_pending = False
        if self.timer is not None:
            self._disarm()
        super().on_message_complete()

    # --------------------------------------------------------------- timeouts
    def _arm(self, part: Part, delay_s: float) -> None:
        self._disarm()
        self.waiting_for = part
        self.timer = self.loop.call_later(delay_s, self._timed_out)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timed_out(self) -> None:
        """The request did not arrive in time: 408 (if one was under way and nothing is being answered) and close."""
        self.timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if self.waiting_for == "body":
            CONNECTION_STATS.timeouts["body"] += 1
            answered = cycle is None or cycle.response_started  # answered without the whole body (413, 429)
            self._unblock(cycle)
            if answered:
                self.transport.close()
            else:
                self._close_with(408, f"request body not received within {self.bounds.body_timeout_s:g} s")
            return
        if cycle is not None and not cycle.response_complete:  # the previous request is still being answered
            cycle.keep_alive = False  # close after it
            return
        if not self.headers_pending:  # nothing was asked on this connection since it opened or was last answered
            self.transport.close()
            return
        CONNECTION_STATS.timeouts["headers"] += 1
        self._close_with(408, f"request headers not received within {self.bounds.header_timeout_s:g} s")

    @staticmethod
    def _unblock(cycle: Any) -> None:
        """Tell the app awaiting the body that the client left (its receive() returns http.disconnect; what it
        sends then is dropped): the decision fast path and BodyLimit return without answering."""
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()

    def _close_with(self, status: int, detail: str) -> None:
        self.transport.write(self._answer(status, detail))
        self.transport.close()

    def _answer(self, status: int, detail: str) -> bytes:
        """A whole HTTP/1.1 response with a JSON detail that closes the connection."""
        body = json.dumps({"detail": detail}).encode()
        headers = [*self.server_state.default_headers, (b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        lines = [name + b": " + value + b"\r\n" for name, value in headers]
        return b"".join([STATUS_LINE[status], *lines, b"\r\n", body])
