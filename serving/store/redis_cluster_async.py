"""The decision path's round trips on a Redis Cluster: one pipelined connection per master, the round trip split per
node (serving/store/cluster_routing.py) and sent to every node at once, the replies put back in order.

The same interface as `AsyncRedis` (`execute(commands, raise_on_error)`, `close()`), so the decision service never
asks which mode is on; serving/store/redis_async.py `async_redis(url, timeout_s)` picks one from REDIS_URL. A
round trip whose keys all live on one node costs what it costs on one server; one that spans nodes costs the slowest
node's round trip (the writes leave together).

The slot map comes from CLUSTER SLOTS, asked of a known node (the seeds of the URL first time): at the first call,
after a MOVED / ASK / TRYAGAIN / CLUSTERDOWN reply (a failover or a reshard: those commands did not run and are sent
once more, after the refresh; ASK goes to the node named, after ASKING), and after a node failed (refused, lost or
timed-out connection: the error is raised, as on one server, so the breaker and the fallbacks count it; the next
round trip re-reads the map, at most every `refresh_interval_s` while a failover is in progress).

A round trip that fails on one node may have run on the others (a cap reserved on one master while the budget's
master was down): the decision falls back as it does on one server when a reply is lost, and what was recorded
errs on the side of the limits (a reservation that expires with its window, a charge the day forgets).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import redis

from infra.redis_cluster import SLOTS, parse_cluster_url
from serving.store.cluster_routing import merge, plan, redirection, unsettled
from serving.store.redis_async import AsyncRedis

Address = tuple[str, int]


class AsyncRedisCluster:
    """Pipelined round trips to the Redis Cluster at `url` (redis+cluster://...), on the running event loop."""

    def __init__(self, url: str, timeout_s: float, refresh_interval_s: float = 0.1):
        self.address = parse_cluster_url(url)
        self.timeout_s = timeout_s
        self.refresh_interval_s = refresh_interval_s
        self._owners: list[Address] | None = None  # slot → its master
        self._stale = False  # a node failed since the map was read: read it again (at most every interval)
        self._refreshed_at = 0.0
        self._refreshing: asyncio.Future | None = None
        self._seen: dict[Address, None] = dict.fromkeys(self.address.nodes)  # every node ever in a map, seeds first
        self._nodes: dict[Address, AsyncRedis] = {}
        self.refreshes = 0  # slot map reads (the tests read it)

    def node(self, address: Address) -> AsyncRedis:
        """The pipelined connection of one node (opened at its first round trip)."""
        client = self._nodes.get(address)
        if client is None:
            client = self._nodes[address] = AsyncRedis(self.address.node_url(*address), self.timeout_s)
        return client

    async def execute(self, commands: Sequence[tuple], raise_on_error: bool = True) -> list:
        """Send `commands`, each to its key's master, all nodes at once; their replies in order (no commands: no
        round trip). Error replies are returned in place, or the first is raised with `raise_on_error`."""
        if not commands:
            return []
        owners = self._owners
        if owners is None or (self._stale and time.monotonic() >= self._refreshed_at + self.refresh_interval_s):
            owners = await self._refresh()
        replies = await self._send(commands, owners)
        again = [i for i, reply in enumerate(replies) if unsettled(reply)]
        if again:
            replies = await self._resend(commands, replies, again)
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, redis.exceptions.RedisError):
                    raise reply
        return replies

    async def _send(self, commands: Sequence[tuple], owners: list[Address]) -> list:
        batches = plan(commands, owners.__getitem__)
        try:
            if len(batches) == 1:
                results = [await self.node(batches[0].node).execute(batches[0].commands, raise_on_error=False)]
            else:
                results = await asyncio.gather(
                    *(self.node(b.node).execute(b.commands, raise_on_error=False) for b in batches),
                    return_exceptions=True,
                )
                failed = next((r for r in results if isinstance(r, BaseException)), None)
                if failed is not None:
                    raise failed
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            self._stale = True  # the node may be gone for good (a failover): read the map again soon
            raise
        if len(batches) == 1 and batches[0].targets == [(i, None) for i in range(len(commands))]:
            return results[0]  # one node, nothing split or moved: the replies are already in order
        return merge(commands, batches, results)

    async def _resend(self, commands: Sequence[tuple], replies: list, again: list[int]) -> list:
        """Send the redirected commands once more: ASK to the node it names (after ASKING), the others after a fresh
        slot map. Whatever they answer now is their reply."""
        asked = [i for i in again if (r := redirection(replies[i])) is not None and r[0] == "ASK"]
        moved = [i for i in again if i not in asked]
        for i in asked:
            _, host, port = redirection(replies[i])  # type: ignore[misc]
            replies[i] = (await self.node((host, port)).execute([("ASKING",), commands[i]], raise_on_error=False))[1]
        if moved:
            owners = await self._refresh()
            for i, reply in zip(moved, await self._send([commands[i] for i in moved], owners)):
                replies[i] = reply
        return replies

    async def _refresh(self) -> list[Address]:
        """The slot map, read again (concurrent callers share one read)."""
        if self._refreshing is None or self._refreshing.get_loop() is not asyncio.get_running_loop():
            self._refreshing = asyncio.ensure_future(self._read_map())
        refreshing = self._refreshing
        try:
            return await asyncio.shield(refreshing)
        finally:
            if refreshing.done() and self._refreshing is refreshing:
                self._refreshing = None

    async def _read_map(self) -> list[Address]:
        """CLUSTER SLOTS of the first known node that answers with a map covering every slot."""
        errors = []
        self._refreshed_at = time.monotonic()
        for address in list(self._seen):
            try:
                (ranges,) = await self.node(address).execute([("CLUSTER", "SLOTS")])
            except redis.exceptions.RedisError as exc:
                errors.append(f"{address[0]}:{address[1]}: {exc}")
                continue
            owners = _owners_from(ranges, address[0])
            if owners is not None:
                self._owners, self._stale = owners, False
                self._seen.update(dict.fromkeys(owners))
                self.refreshes += 1
                return owners
            errors.append(f"{address[0]}:{address[1]}: its slot map does not cover all {SLOTS} slots")
        raise redis.exceptions.ConnectionError(
            f"no node of the Redis Cluster {self.address.masked()} gave a full slot map: {'; '.join(errors)}"
        )

    def close(self) -> None:
        """Drop every node's connection."""
        for client in self._nodes.values():
            client.close()
        self._nodes.clear()
        self._owners = None


def _owners_from(ranges: list, asked_host: str) -> list[Address] | None:
    """slot → master from a CLUSTER SLOTS reply; None when it leaves a slot uncovered (a cluster being set up)."""
    owners: list[Address | None] = [None] * SLOTS
    for entry in ranges:
        start, end, master = int(entry[0]), int(entry[1]), entry[2]
        host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
        address = (host or asked_host, int(master[1]))  # an empty host: the node asked
        owners[start:end + 1] = [address] * (end - start + 1)
    return None if any(owner is None for owner in owners) else owners  # type: ignore[return-value]
