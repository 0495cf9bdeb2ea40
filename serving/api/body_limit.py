"""Refuse request bodies over a size limit with 413 before they are parsed (declared or streamed length)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    """The streamed body passed the limit."""


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` gets 413 with a JSON message, however it is sent."""

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
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracking_send)
        except BodyTooLarge:
            if not started:
                await refuse(send, self.max_bytes)


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
