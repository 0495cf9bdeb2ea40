"""FastAPI dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from serving.core.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    """The process-wide runtime built at start-up (service, outcome log, admission, settings). `async` on
    purpose: FastAPI runs a sync dependency in its thread pool, one thread hop per request for a field read."""
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def require_admin(runtime: RuntimeDep, authorization: Annotated[str | None, Header()] = None) -> None:
    """With HYPERLIFT_SERVING_ADMIN_TOKEN set, admin calls must send `Authorization: Bearer <token>`."""
    token = runtime.settings.admin_token
    if token is not None and authorization != f"Bearer {token}":
        raise HTTPException(status_code=401, detail="admin endpoint: send Authorization: Bearer <admin token>")
