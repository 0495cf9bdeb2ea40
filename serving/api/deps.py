"""FastAPI dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from serving.core.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    """The process-wide runtime built at start-up (service, outcome log, admission, settings). `async` on
    purpose: FastAPI runs a sync dependency in its thread pool, one thread hop per request for a field read."""
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
