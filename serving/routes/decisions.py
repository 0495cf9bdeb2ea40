"""POST /v1/decisions."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from serving.deps import ServiceDep
from serving.schemas import DecisionRequest, DecisionResponse
from serving.service import UnknownCandidates

router = APIRouter(prefix="/v1", tags=["decisions"])


@router.post("/decisions", response_model=DecisionResponse)
def decide(request: DecisionRequest, service: ServiceDep) -> DecisionResponse:
    """Choose an action for a user: the best expected incremental net value, with logged exploration."""
    try:
        return service.decide(request)
    except UnknownCandidates as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
