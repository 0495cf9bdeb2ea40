"""POST /v1/decisions."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response

from serving.deps import RuntimeDep
from serving.schemas import DecisionRequest, DecisionResponse
from serving.service import BadCandidates, UnknownSurface

router = APIRouter(prefix="/v1", tags=["decisions"])


def _json(response: DecisionResponse) -> Response:
    """The response built by the service is already valid: serialize it once, skip FastAPI's re-validation."""
    return Response(response.model_dump_json(), media_type="application/json")


@router.post("/decisions", response_model=DecisionResponse)
async def decide(request: DecisionRequest, runtime: RuntimeDep) -> Response:
    """Choose an action (or a slate) for a user on a surface, with logged exploration; never waits in an
    unbounded queue: beyond the in-flight limit the surface's neutral action is served (`fallback="overloaded"`).
    The decision runs on the event loop (its Redis round trips awaited on the worker's one multiplexed connection):
    no thread hand-off per request."""
    service = runtime.service
    try:
        if not runtime.admission.try_enter():
            return _json(service.shed(request))
        service.metrics.in_flight.inc()
        try:
            return _json(await service.decide_async(request))
        finally:
            runtime.admission.leave()
            service.metrics.in_flight.dec()
    except UnknownSurface as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    except BadCandidates as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
