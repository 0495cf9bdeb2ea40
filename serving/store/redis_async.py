"""Redis round trips of the decision path on the event loop: one multiplexed connection, replies read in order.

Every decision in flight on a worker shares one connection: a round trip writes its commands at once (hiredis packs
them) and waits for its replies, which arrive in the order the round trips were written (Redis answers a connection
in order), so many decisions pipeline on one socket and one read parses the replies of several. No thread, no
connection pool, no per-command callbacks: measured against the thread-pool path (sync client in a worker thread)
this is what lets a decision run on the event loop without blocking it.

Faults raise redis-py's exceptions, as the sync path does, so the circuit breaker and the fallbacks see the same
errors: a refused or lost connection raises `redis.exceptions.ConnectionError` (every round trip waiting on it
fails at once, and the next one reconnects), a round trip that outlives `timeout_s` raises
`redis.exceptions.TimeoutError` and closes the connection (replies still owed on it could not be matched to a later
round trip). Redis's error replies (NOSCRIPT, ...) come back in place as redis-py's exception classes.

On a Redis Cluster (REDIS_URL=redis+cluster://...) `async_redis` returns `AsyncRedisCluster`, which holds one of
these per master and splits each round trip per node (serving/store/redis_cluster_async.py).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import hiredis
import redis
from redis._parsers.base import BaseParser
from redis.connection import parse_url

from infra.redis_tls import TlsOptions


@dataclass
class _Waiting:
    """One round trip waiting for its `n` replies until `deadline` (the loop's clock)."""

    future: asyncio.Future
    n: int
    deadline: float
    replies: list = field(default_factory=list)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(
            protocolError=redis.exceptions.InvalidResponse, replyError=BaseParser.parse_error
        )
        self.waiting: deque[_Waiting] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None  # armed for the earliest deadline of a waiting round trip

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if not self.waiting:  # a reply nobody asked for: the stream is out of step, start over
                self.fail(redis.exceptions.InvalidResponse("Redis sent a reply no round trip was waiting for"))
                return
            head = self.waiting[0]
            head.replies.append(reply)
            if len(head.replies) == head.n:
                self.waiting.popleft()
                if not head.future.done():  # done: it timed out, its replies are dropped here
                    head.future.set_result(head.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True  # the timer, if armed, finds the connection closed and does nothing
        self._fail_waiting(redis.exceptions.ConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    def fail(self, error: Exception) -> None:
        """Fail every waiting round trip with `error` and drop the connection."""
        self.closed = True
        self._stop_timer()
        self._fail_waiting(error)
        if self.transport is not None:
            self.transport.abort()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _fail_waiting(self, error: Exception) -> None:
        while self.waiting:
            head = self.waiting.popleft()
            if not head.future.done():
                head.future.set_exception(error)


class AsyncRedis:
    """Pipelined round trips to the Redis server at `url` (redis://, rediss:// with TLS, or unix://), on the running
    event loop."""

    def __init__(self, url: str, timeout_s: float):
        options = parse_url(url)
        # TLS (infra/redis_tls.py): the same options as redis-py's, from the URL's query; the handshake is asyncio's.
        self._tls = TlsOptions.from_query(urlsplit(url).query).context() if url.startswith("rediss://") else None
        self.address: tuple[str, int] | str = options["path"] if "path" in options else (
            options.get("host", "localhost"), int(options.get("port", 6379))
        )
        self._setup: list[tuple] = []
        if options.get("password") is not None:
            user = options.get("username")
            self._setup.append(("AUTH", user, options["password"]) if user else ("AUTH", options["password"]))
        if int(options.get("db", 0)):
            self._setup.append(("SELECT", int(options["db"])))
        self.timeout_s = timeout_s
        self._protocol: _Protocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the connection belongs to
        self._connecting: asyncio.Future | None = None

    async def execute(self, commands: Sequence[tuple], raise_on_error: bool = True) -> list:
        """Send `commands` in one write and return their replies in order (no commands: no round trip). Error
        replies are returned in place, or the first is raised with `raise_on_error`."""
        if not commands:
            return []
        loop = asyncio.get_running_loop()
        protocol = self._protocol
        if protocol is None or protocol.closed or self._loop is not loop:
            if protocol is not None and self._loop is not loop:  # a new event loop (a test client's): start afresh
                self._protocol, self._connecting = None, None
            protocol = await self._connect()
        waiting = _Waiting(loop.create_future(), len(commands), loop.time() + self.timeout_s)
        protocol.waiting.append(waiting)
        protocol.transport.write(b"".join([hiredis.pack_command(command) for command in commands]))
        if protocol.timer is None:
            # One timer per connection, not one per round trip (arming and cancelling a loop timer twice per decision
            # was measurable CPU): it fires at the earliest deadline, and re-arms for the next one if round trips
            # are still waiting then (most have long had their replies).
            protocol.timer = loop.call_at(waiting.deadline, self._check_deadlines, protocol)
        replies = await waiting.future
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, redis.exceptions.RedisError):  # error replies (WRONGPASS maps to a ConnectionError)
                    raise reply
        return replies

    def close(self) -> None:
        """Drop the connection (round trips waiting on it fail with ConnectionError)."""
        if self._protocol is not None and self._loop is not None and not self._loop.is_closed():
            self._protocol.fail(redis.exceptions.ConnectionError("the async Redis client was closed"))
        self._protocol, self._loop = None, None  # a connection of a loop already closed went with it

    def _check_deadlines(self, protocol: _Protocol) -> None:
        """The connection's timer: fail the oldest round trip still waiting if its deadline passed (with the connection:
        the replies still owed on it could not be matched to a later round trip), else re-arm for its deadline.
        Round trips are written, answered and given deadlines in one order, so the first one still waiting (its future
        not done: a cancelled caller's replies are still read and dropped) has the earliest deadline."""
        protocol.timer = None
        if protocol.closed:
            return
        waiting = next((w for w in protocol.waiting if not w.future.done()), None)
        if waiting is None:
            return
        loop = waiting.future.get_loop()
        if loop.time() < waiting.deadline:
            protocol.timer = loop.call_at(waiting.deadline, self._check_deadlines, protocol)
            return
        waiting.future.set_exception(
            redis.exceptions.TimeoutError(f"Redis did not answer within {self.timeout_s * 1000:.0f} ms")
        )
        protocol.fail(redis.exceptions.TimeoutError("an earlier round trip on this connection timed out"))

    async def _connect(self) -> _Protocol:
        """The live connection: opened (with AUTH and SELECT) by the first caller, awaited by the others."""
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            if isinstance(self.address, str):
                opening = loop.create_unix_connection(_Protocol, self.address)
            else:
                opening = loop.create_connection(_Protocol, *self.address, ssl=self._tls)
            _, protocol = await asyncio.wait_for(opening, self.timeout_s)
        except (OSError, asyncio.TimeoutError) as exc:
            raise redis.exceptions.ConnectionError(f"cannot connect to Redis at {self.address}: {exc!r}") from exc
        self._protocol, self._loop = protocol, loop
        if self._setup:
            try:
                await self.execute(self._setup)
            except redis.exceptions.RedisError as exc:  # a wrong password or database: no half-set-up connection
                protocol.fail(redis.exceptions.ConnectionError("connection set-up failed"))
                self._protocol = None
                raise redis.exceptions.ConnectionError(f"Redis refused the connection set-up: {exc}") from exc
        return protocol


def async_redis(url: str, timeout_s: float) -> "AsyncRedis":
    """The decision path's client for REDIS_URL: `AsyncRedis` for one server, `AsyncRedisCluster` (same interface,
    serving/store/redis_cluster_async.py) for redis+cluster://."""
    from infra.redis_cluster import is_cluster_url

    if is_cluster_url(url):
        from serving.store.redis_cluster_async import AsyncRedisCluster

        return AsyncRedisCluster(url, timeout_s)  # type: ignore[return-value]
    return AsyncRedis(url, timeout_s)
