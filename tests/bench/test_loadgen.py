"""The load generator sends every request it is asked for, paced or flooding, and counts what came back."""

import asyncio
import threading
from types import SimpleNamespace

import pytest

from bench.loadgen import encode_post, run_load


@pytest.fixture
def server():
    """A tiny HTTP/1.1 keep-alive server on a thread: 200 for every request, 404 for path /missing."""
    ready = threading.Event()
    state = SimpleNamespace(port=0, seen=[], loop=None, stop=None)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                state.seen.append(await reader.readexactly(length))
                status = b"404 Not Found" if head.startswith(b"POST /missing ") else b"200 OK"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        state.loop, state.stop = asyncio.get_running_loop(), asyncio.Event()
        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        state.port = srv.sockets[0].getsockname()[1]
        ready.set()
        await state.stop.wait()
        srv.close()
        await srv.wait_closed()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the test server did not start"
    yield state
    state.loop.call_soon_threadsafe(state.stop.set)
    thread.join(10)


def test_open_loop_sends_each_request_once_and_counts_statuses(server):
    bodies = [encode_post("127.0.0.1", "/missing" if i % 10 == 0 else "/x", {"i": i}) for i in range(60)]
    result = run_load("127.0.0.1", server.port, lambda i: bodies[i], 60, rate=2000.0, connections=8)
    assert result.statuses == {200: 54, 404: 6}
    assert len(result.latencies_ms) == 60 and result.errors == 0
    assert sorted(server.seen) == sorted(b'{"i": %d}' % i for i in range(60))


def test_closed_loop_sends_every_request_within_its_time_bound(server):
    body = encode_post("127.0.0.1", "/x", {"i": 0})
    result = run_load("127.0.0.1", server.port, lambda i: body, 200, rate=0, connections=4, timeout_s=60)
    assert result.statuses == {200: 200} and len(server.seen) == 200
