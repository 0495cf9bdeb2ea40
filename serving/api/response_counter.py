"""Responses by route family and status code (`hyperlift_http_responses_total`), counted ahead of everything: the
decision fast path, FastAPI's routes, 404s and the rate limit's 429s alike."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.api.rate_limit import route_family

OPS_ROUTES = {"/healthz": "healthz", "/readyz": "readyz", "/metrics": "metrics", "/docs": "docs", "/redoc": "docs",
              "/openapi.json": "docs"}


def route_label(path: str) -> str:
    """A bounded label: the /v1 family, an operations page, or 'other' (never a raw path: they are unbounded)."""
    family = route_family(path)
    if family != "other":
        return family
    return OPS_ROUTES.get(path, "docs" if path.startswith("/static-offline-docs") else "other")


class ResponseCounter:
    """ASGI wrapper counting each response's status by route; the runtime's metrics once the app has started."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self.state = getattr(app, "state", None)
        self.metrics = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._on_start(send))
            return
        metrics = self.metrics
        if scope["type"] != "http" or metrics is None:
            await self.app(scope, receive, send)
            return
        route = route_label(scope["path"])

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                metrics.labelled(metrics.responses, route, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counted)

    def _on_start(self, send: Send) -> Send:
        async def started(message: Message) -> None:
            runtime = getattr(self.state, "runtime", None)
            if message["type"] == "lifespan.startup.complete" and runtime is not None:
                self.metrics = runtime.service.metrics
            await send(message)

        return started
