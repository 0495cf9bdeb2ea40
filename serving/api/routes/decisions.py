"""POST /v1/decisions: `answer` turns a request body into the status and body of the reply. FastAPI's route serves
it (and documents it); the app uvicorn runs puts `serving.api.fast_path.DecisionFastPath` in front, which calls the same
`answer` without FastAPI's middleware, routing and dependency layers."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from serving.api.auth import require
from serving.api.deps import RuntimeDep
from serving.api.errors import AUTH_ERRORS, INVALID, TOO_LARGE, UNKNOWN_SURFACE, validation_detail
from serving.core.runtime import Runtime
from serving.core.schemas import DecisionRequest, DecisionResponse
from serving.decision.service import BadCandidates, UnknownSurface
from serving.ops.api_keys import DECIDE

router = APIRouter(prefix="/v1", tags=["decisions"], dependencies=[require(DECIDE)], responses=AUTH_ERRORS)


async def answer(runtime: Runtime, body: bytes) -> tuple[int, bytes]:
    """(HTTP status, JSON body) for one decision request body.

    Choose an action (or a slate) for a user on a surface, with logged exploration; never waits in an unbounded
    queue: beyond the in-flight limit the surface's neutral action is served (`fallback="overloaded"`). The decision
    runs on the event loop (its Redis round trips awaited on the worker's one multiplexed connection). A body that
    is not a valid DecisionRequest (not JSON, not UTF-8, `user_id` not a JSON integer, ...) is a 422 with pydantic's
    errors (located under "body", as FastAPI reports them); an unknown surface a 404; candidates the surface or the
    model do not know a 422 with a message; a body over 64 kB a 413.
    """
    try:
        request = DecisionRequest.model_validate_json(body)
    except ValidationError as exc:  # rendered as FastAPI's routes render theirs (serving.api.errors)
        return 422, json.dumps({"detail": validation_detail(exc.errors(include_url=False), ("body",))}).encode()
    service = runtime.service
    try:
        if not runtime.admission.try_enter():
            return 200, _json(service.shed(request))
        service.metrics.in_flight.inc()
        try:
            return 200, _json(await service.decide_async(request))
        finally:
            runtime.admission.leave()
            service.metrics.in_flight.dec()
    except UnknownSurface as exc:
        return 404, json.dumps({"detail": str(exc)}).encode()
    except BadCandidates as exc:
        return 422, json.dumps({"detail": str(exc)}).encode()


def _json(response: DecisionResponse) -> bytes:
    """The response built by the service is already valid: serialize it once, no re-validation, straight to bytes
    (`model_dump_json` is the same serializer's bytes decoded to a str, which the reply would encode again)."""
    return response.__pydantic_serializer__.to_json(response)


@router.post(
    "/decisions",
    response_model=DecisionResponse,
    responses={**UNKNOWN_SURFACE, **TOO_LARGE, **INVALID},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": DecisionRequest.model_json_schema()}
    }}},
    description=answer.__doc__.split("\n\n")[1].strip(),
)
async def decide(request: Request, runtime: RuntimeDep) -> Response:
    """Choose an action (or a slate) for a user on a surface."""
    status, body = await answer(runtime, await request.body())
    return Response(body, status_code=status, media_type="application/json")
