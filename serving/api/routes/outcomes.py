"""POST /v1/outcomes."""

from __future__ import annotations

from typing import Annotated

import redis
from fastapi import APIRouter, Header, HTTPException, Response, status

from serving.api.auth import require
from serving.api.deps import RuntimeDep
from serving.api.errors import AUTH_ERRORS, BODY_ERRORS, REDIS_DOWN
from serving.core.schemas import IDEMPOTENCY_KEY, OutcomeAccepted, OutcomeRequest
from serving.ops.api_keys import OUTCOMES
from serving.ops.redaction import redis_failure
from serving.store.outcomes import OutcomeRejected

router = APIRouter(prefix="/v1", tags=["outcomes"])
Caller = Annotated[str, require(OUTCOMES)]
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", pattern=IDEMPOTENCY_KEY,
    description="A retry with the same key (per API key) is answered 200 as a duplicate and not stored again; "
    "without one every call stores an outcome.",
)]


@router.post(
    "/outcomes", response_model=OutcomeAccepted, status_code=status.HTTP_202_ACCEPTED,
    responses={
        200: {"model": OutcomeAccepted, "description": "A retry: the outcome of this idempotency key is already "
                                                       "stored (not again; `duplicate` is true)."},
        **AUTH_ERRORS, **BODY_ERRORS, **REDIS_DOWN,
    },
)
def record_outcome(
    outcome: OutcomeRequest, runtime: RuntimeDep, caller: Caller, response: Response,
    idempotency_key: IdempotencyKey = None,
) -> OutcomeAccepted:
    """Store a delayed outcome for the decision-log join (by decision_id, or by user within the window).

    202: stored. 200: a retry of an outcome stored under the same idempotency key, not stored again. 422: the body
    broke the schema, its decision_id was not issued by this service, its time is in the future, or its idempotency
    key was used for a different outcome. 503: Redis did not take it; retrying is safe with an idempotency key.
    """
    try:
        accepted = runtime.outcomes.record(outcome, idempotency_key=idempotency_key, client=caller)
    except OutcomeRejected as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    except redis.exceptions.RedisError as exc:
        raise HTTPException(status_code=503, detail=f"outcome not stored, retry later: {redis_failure(exc)}") from exc
    if accepted.duplicate:
        response.status_code = status.HTTP_200_OK
    return accepted
