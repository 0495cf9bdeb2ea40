"""The decision route ahead of FastAPI: POST /v1/decisions answered by `serving.api.routes.decisions.answer` straight
from ASGI (API key, body limit, read, answer, two sends). FastAPI's middleware, routing and dependency layers cost
about 0.2 ms of CPU per request on the 2-core bench machine (a bare async FastAPI endpoint 0.45–0.50 ms, the same
answer from plain ASGI 0.24 ms), a tenth of a 50-candidate decision; every other request, and the lifespan, go to
FastAPI."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from serving.api.auth import refusal, send_refusal
from serving.api.body_limit import ClientLeft, declared_too_large, read_body, refuse, send_json
from serving.api.routes.decisions import answer
from serving.ops.api_keys import DECIDE

log = logging.getLogger(__name__)
PATH = "/v1/decisions"
INTERNAL_ERROR = json.dumps({"detail": "internal error while deciding; the service log has the traceback"}).encode()


class DecisionFastPath:
    """ASGI app: `POST /v1/decisions` answered here, anything else by `app`; `state` is the FastAPI app's."""

    def __init__(self, app: FastAPI, max_bytes: int):
        self.app = app
        self.state = app.state
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        # Before the body is read: a caller without a key costs a header scan and a dict lookup, nothing more.
        refused = refusal(self.state.runtime.keys, scope, DECIDE)
        if refused is not None:
            await send_refusal(send, refused)
            return
        if declared_too_large(scope, self.max_bytes):
            await refuse(send, self.max_bytes)
            return
        try:
            request_body = await read_body(receive, self.max_bytes)
        except ClientLeft:  # nobody to answer
            return
        if request_body is None:
            await refuse(send, self.max_bytes)
            return
        try:
            status, body = await answer(self.state.runtime, request_body)
        except Exception:  # a bug, not bad input: answer 500 with a message, as FastAPI's error middleware would
            log.exception("decision request failed: answered 500 (counted in hyperlift_decision_request_errors)")
            self.state.runtime.service.metrics.request_errors.inc()
            status, body = 500, INTERNAL_ERROR
        await send_json(send, status, body)
