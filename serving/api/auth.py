"""Authentication at the HTTP edge: every route family needs an API key with its scope (serving.ops.api_keys),
checked from the request's headers before its body is read on the decision fast path, by a dependency on FastAPI's
routes. 401 (with `WWW-Authenticate: Bearer`) when no valid key is sent, 403 when the key lacks the scope; both in
the service's error format, {"detail": "..."}. What is open: /healthz, /readyz, the API docs; in dev mode every
scope but admin-with-a-token (docs/security.md)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import Scope, Send

from serving.ops.api_keys import ANONYMOUS, SCOPES, KeyRing

STATE_KEY = "hyperlift.keys"
"""Where the worker's KeyRing is in the ASGI lifespan state, copied into every request's scope["state"]."""

api_key = HTTPBearer(
    auto_error=False, scheme_name="api_key",
    description="An API key (HYPERLIFT_SERVING_API_KEYS_FILE; HYPERLIFT_SERVING_ADMIN_TOKEN is one with the admin "
    "scope) as `Authorization: Bearer <key>`. Each operation lists the scope it needs. Open in dev mode.",
)


@dataclass(frozen=True)
class Refusal:
    """A 401 or 403 answer: its status, message and headers."""

    status: int
    detail: str
    headers: dict[str, str]

    @property
    def body(self) -> bytes:
        """The JSON body, as the service's other errors: {"detail": "..."}."""
        return json.dumps({"detail": self.detail}).encode()


UNAUTHENTICATED = {
    scope: Refusal(401, f"authentication required: send Authorization: Bearer <API key>, a key with the {scope!r} "
                        "scope", {"WWW-Authenticate": "Bearer"})
    for scope in SCOPES
}


def authorization(scope: Scope) -> bytes | None:
    """The request's `Authorization` header value (ASGI lowercases header names)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value
    return None


def refusal(keys: KeyRing, scope: Scope, needed: str) -> Refusal | None:
    """Why the request may not call a route of scope `needed` (401 or 403), or None when it may."""
    if needed in keys.open_scopes:
        return None
    key = keys.identify(authorization(scope))
    if key is None:
        return UNAUTHENTICATED[needed]
    if needed not in key.scopes:
        return Refusal(403, f"API key {key.id!r} does not have the {needed!r} scope this call needs; use a key that "
                            "has it", {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{needed}"'})
    return None


def client_id(scope: Scope) -> str:
    """Stable id of the caller for per-client accounting (e.g. rate limits): the key id of a valid API key in the
    `Authorization` header, else "anonymous" (no key, an unknown one, or no KeyRing in the lifespan state yet). It
    does not check scopes; cheap: a header scan and a dict lookup."""
    keys = scope.get("state", {}).get(STATE_KEY)
    if keys is None:
        return ANONYMOUS
    key = keys.identify(authorization(scope))
    return key.id if key is not None else ANONYMOUS


async def send_refusal(send: Send, refused: Refusal) -> None:
    """Send a refusal straight from ASGI (the decision fast path)."""
    body = refused.body
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in refused.headers.items()]
    await send({"type": "http.response.start", "status": refused.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@functools.cache
def require(needed: str) -> object:
    """A dependency that answers 401/403 unless the request's key has scope `needed`; declares the bearer scheme
    and the scope in the OpenAPI document. Returns the caller's client id. One per scope (cached), so a router's and
    a route's declarations of the same scope run once per request."""

    # A default, not Annotated[...]: with postponed annotations FastAPI could not see `needed` from the string.
    async def authorized(
        request: Request, _: HTTPAuthorizationCredentials | None = Security(api_key, scopes=[needed])
    ) -> str:
        keys: KeyRing = request.app.state.runtime.keys
        refused = refusal(keys, request.scope, needed)
        if refused is not None:
            raise HTTPException(status_code=refused.status, detail=refused.detail, headers=refused.headers)
        key = keys.identify(authorization(request.scope))
        return key.id if key is not None else ANONYMOUS

    authorized.__name__ = f"require_{needed}"
    return Depends(authorized)
