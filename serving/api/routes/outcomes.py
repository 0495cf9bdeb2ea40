"""POST /v1/outcomes."""

from __future__ import annotations

import redis
from fastapi import APIRouter, HTTPException, status

from serving.api.deps import RuntimeDep
from serving.api.errors import BODY_ERRORS, REDIS_DOWN
from serving.core.schemas import OutcomeAccepted, OutcomeRequest
from serving.store.outcomes import OutcomeRejected

router = APIRouter(prefix="/v1", tags=["outcomes"])


@router.post(
    "/outcomes", response_model=OutcomeAccepted, status_code=status.HTTP_202_ACCEPTED,
    responses={**BODY_ERRORS, **REDIS_DOWN},
)
def record_outcome(outcome: OutcomeRequest, runtime: RuntimeDep) -> OutcomeAccepted:
    """Store a delayed outcome for the decision-log join (by decision_id, or by user within the window)."""
    try:
        return runtime.outcomes.record(outcome)
    except OutcomeRejected as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    except redis.exceptions.RedisError as exc:
        raise HTTPException(status_code=503, detail=f"outcome not stored, retry later: {exc}") from exc
