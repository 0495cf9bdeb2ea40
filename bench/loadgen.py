"""A lean HTTP/1.1 load generator on keep-alive connections (asyncio streams, pre-encoded requests).

Open loop (`rate` > 0): request i is due at t0 + i/rate whatever happened before, and its latency is measured from
that due time, so a stalled server shows up as latency instead of silently lowering the offered load
(no coordinated omission). Closed loop (`rate` = 0): every connection sends its next request as soon as the
previous answer arrives, which measures the maximum throughput. Bounded in requests and in time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class LoadResult:
    """Latencies (ms) of the answered requests, status counts, offered and achieved rates."""

    latencies_ms: np.ndarray
    statuses: dict[int, int]
    errors: int
    elapsed_s: float
    offered_rps: float
    policy_share: float = 1.0  # share of answers not shed by admission control (filled in from the traces)

    @property
    def achieved_rps(self) -> float:
        """Answered requests per second of wall time."""
        return len(self.latencies_ms) / self.elapsed_s

    def percentiles(self) -> dict[str, float]:
        """p50, p99, p99.9 and max in milliseconds."""
        x = self.latencies_ms
        return {"p50": float(np.percentile(x, 50)), "p99": float(np.percentile(x, 99)),
                "p99.9": float(np.percentile(x, 99.9)), "max": float(x.max())}


def encode_post(host: str, path: str, body: dict) -> bytes:
    """One HTTP/1.1 keep-alive POST with a JSON body."""
    payload = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: keep-alive\r\n\r\n")
    return head.encode() + payload


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def _run(
    host: str, port: int, requests: Callable[[int], bytes], n: int, rate: float, connections: int, timeout_s: float
) -> LoadResult:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    started = time.perf_counter()
    deadline = started + timeout_s

    async def producer() -> None:
        for i in range(n):
            if rate > 0:
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            await queue.put(i)
            if time.perf_counter() > deadline:
                break
        for _ in range(connections):
            await queue.put(-1)

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (i := await queue.get()) >= 0:
                due = started + i / rate if rate > 0 else time.perf_counter()
                try:
                    writer.write(requests(i))
                    status = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError):
                    errors += 1
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                latencies.append((time.perf_counter() - due) * 1000.0)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(producer(), *(connection() for _ in range(connections)))
    return LoadResult(np.asarray(latencies), statuses, errors, time.perf_counter() - started, rate)


def run_load(
    host: str, port: int, requests: Callable[[int], bytes], n: int, rate: float = 0.0, connections: int = 32,
    timeout_s: float = 60.0,
) -> LoadResult:
    """Send up to `n` requests (`requests(i)` gives request i's bytes) at `rate` per second (0: closed loop)."""
    return asyncio.run(_run(host, port, requests, n, rate, connections, timeout_s))
