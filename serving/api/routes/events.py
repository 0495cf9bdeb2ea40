"""POST /v1/events."""

from __future__ import annotations

import redis
from fastapi import APIRouter, HTTPException, Response, status

from serving.api.auth import require
from serving.api.deps import RuntimeDep
from serving.api.errors import AUTH_ERRORS, BAD_BODY, EVENTS_INVALID, REDIS_DOWN, TOO_LARGE
from serving.core.schemas import EventBatch, EventsApplied
from serving.ops.api_keys import EVENTS
from serving.ops.redaction import redis_failure

router = APIRouter(prefix="/v1", tags=["events"], dependencies=[require(EVENTS)], responses=AUTH_ERRORS)


@router.post(
    "/events", response_model=EventsApplied, status_code=status.HTTP_202_ACCEPTED,
    responses={
        200: {"model": EventsApplied, "description": "Every event was a replay of one already applied."},
        **BAD_BODY, **TOO_LARGE, **EVENTS_INVALID, **REDIS_DOWN,
    },
)
def ingest_events(batch: EventBatch, runtime: RuntimeDep, response: Response) -> EventsApplied:
    """Validate events against the contracts and update the users' online features before answering.

    202: some events were applied (refused ones are listed with their rule). 200: every event was a replay of one
    already applied. 422: none was applied and some broke a rule. 503: Redis failed; sending the same call again is
    safe and ends as one clean call would (events applied before the failure are counted as accepted, once).
    """
    try:
        result = runtime.events.apply(batch.events)
    except redis.exceptions.RedisError as exc:
        raise HTTPException(
            status_code=503,
            detail=f"events not applied, retry the same call (it is applied once): {redis_failure(exc)}",
        ) from exc
    body = EventsApplied(
        accepted=result.accepted, rejected=result.rejected, users_updated=result.users_updated,
        rows_written=result.rows_written,
    )
    if result.accepted == 0:
        if not runtime.events.only_replays(result):
            raise HTTPException(status_code=422, detail=body.model_dump())
        response.status_code = status.HTTP_200_OK
    return body
