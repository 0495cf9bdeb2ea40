"""FastAPI dependencies."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.core.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    """The process-wide runtime built at start-up (service, outcome log, admission, settings). `async` on
    purpose: FastAPI runs a sync dependency in its thread pool, one thread hop per request for a field read."""
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

# auto_error=False: without a token configured the admin calls are open, so a missing header is not an error by
# itself; declaring the scheme puts the bearer requirement (and its 401) in the OpenAPI document.
admin_bearer = HTTPBearer(
    auto_error=False, scheme_name="admin_token",
    description="HYPERLIFT_SERVING_ADMIN_TOKEN; required on admin calls when the service sets one.",
)


def require_admin(
    runtime: RuntimeDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)]
) -> None:
    """With HYPERLIFT_SERVING_ADMIN_TOKEN set, admin calls must send `Authorization: Bearer <token>`."""
    token = runtime.settings.admin_token
    if token is None:
        return
    sent = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(sent.encode(), token.encode()):  # constant time: the token is not guessable by timing
        raise HTTPException(
            status_code=401, detail="admin endpoint: send Authorization: Bearer <admin token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
