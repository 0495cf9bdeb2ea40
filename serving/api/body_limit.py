"""Refuse request bodies over a size limit with 413 before they are parsed (declared or streamed length)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` gets 413 with a JSON message, however it is sent.

    The body is read here, whole, before the app sees it (at most `max_bytes` of it are ever held), then handed on in
    one message. Counting it on its way to the app instead would raise inside FastAPI's body reader, which turns any
    error there into a 400 ("There was an error parsing the body"): a chunked body over the limit got 400, not 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if declared_too_large(scope, self.max_bytes):
            await refuse(send, self.max_bytes)
            return
        try:
            body = await read_body(receive, self.max_bytes)
        except ClientLeft:  # nobody to answer
            return
        if body is None:
            await refuse(send, self.max_bytes)
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # after the body: the disconnect the app may wait for
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class ClientLeft(Exception):
    """The client disconnected before it sent its whole body."""


async def read_body(receive: Receive, max_bytes: int) -> bytes | None:
    """The whole request body, or None once it passes `max_bytes` (the rest is not read); raises ClientLeft.

    No deadline here: the HTTP protocol bounds how long a body may take (serving/api/connection_limits.py, with no
    timer for a body that arrives whole) and, past it, answers 408 itself and ends this read with ClientLeft."""
    chunks: list[bytes] = []
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientLeft
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def declared_too_large(scope: Scope, max_bytes: int) -> bool:
    """Whether the request's Content-Length already says its body is over `max_bytes`."""
    declared = dict(scope["headers"]).get(b"content-length")
    return declared is not None and declared.isdigit() and int(declared) > max_bytes


async def refuse(send: Send, max_bytes: int) -> None:
    """Send the 413 answer to a body over `max_bytes`."""
    await send_json(send, 413, json.dumps({"detail": f"request body too large: at most {max_bytes} bytes"}).encode())


async def send_json(send: Send, status: int, body: bytes) -> None:
    """Answer with `status` and the JSON `body` straight from ASGI (start, then the whole body)."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
