"""FastAPI application: assembly only (`uvicorn serving.main:app`)."""

from __future__ import annotations

import gc
from importlib.metadata import version
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline

from serving.api.auth import STATE_KEY
from serving.api.body_limit import BodyLimit
from serving.api.errors import request_validation_error
from serving.api.fast_path import DecisionFastPath
from serving.api.rate_limit import RateLimit
from serving.api.response_counter import ResponseCounter
from serving.api.routes import admin, consent, decisions, events as event_routes, health, outcomes
from serving.core.config import ServingSettings
from serving.core.runtime import build_runtime
from serving.ops import json_logs

MAX_BODY_BYTES = 65_536  # a decision request is < 10 kB even with 100 candidates and a full context


def create_app(settings: ServingSettings | None = None) -> ResponseCounter:
    """The decision service app (FastAPI, with the decision route, the rate limit and the response counter ahead of
    it); settings from the environment unless given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, object]]:
        resolved = settings or ServingSettings()
        json_logs.configure(resolved.log_decisions)
        runtime = build_runtime(resolved)
        app.state.runtime = runtime
        # What start-up loaded (Feast, MLflow, the models: ~400k tracked objects) lives as long as the worker: keep
        # it out of the collector, or a full collection stalls every request in flight (334 ms measured here).
        gc.collect()
        gc.freeze()
        runtime.start()
        yield {STATE_KEY: runtime.keys}  # each request's scope["state"]: serving.api.auth.client_id
        runtime.stop()
        gc.unfreeze()

    # /docs and /redoc from files shipped in the package (no CDN: they work offline), open like /openapi.json.
    app = FastAPIOffline(title="Hyperlift decision service", version=version("hyperlift"), lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.add_exception_handler(RequestValidationError, request_validation_error)
    for module in (decisions, outcomes, event_routes, consent, admin, health):
        app.include_router(module.router)
    return ResponseCounter(RateLimit(DecisionFastPath(app, MAX_BODY_BYTES)))  # settings read when the app starts


app = create_app()
