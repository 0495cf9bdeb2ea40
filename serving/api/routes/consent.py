"""POST /v1/consent, GET /v1/consent/{user_id}."""

from __future__ import annotations

from typing import Annotated

import redis
from fastapi import APIRouter, HTTPException, Path, Response, status

from infra.audit import default_log
from serving.api.auth import require
from serving.api.deps import RuntimeDep
from serving.api.errors import AUTH_ERRORS, BODY_ERRORS, REDIS_DOWN
from serving.core.schemas import MAX_ID, ConsentRecorded, ConsentRequest, ConsentState
from serving.decision.identity import user_key
from serving.ops.api_keys import CONSENT
from serving.ops.redaction import redis_failure
from serving.store.outcomes import FUTURE_TOLERANCE_S

router = APIRouter(prefix="/v1", tags=["consent"])
Caller = Annotated[str, require(CONSENT)]


@router.post(
    "/consent", response_model=ConsentRecorded, status_code=status.HTTP_202_ACCEPTED,
    responses={
        200: {"model": ConsentRecorded, "description": "Not applied: a later event (or a revocation of the same "
                                                       "instant) is in effect; the call is in the audit trail."},
        **AUTH_ERRORS, **BODY_ERRORS, **REDIS_DOWN,
    },
)
def record_consent(body: ConsentRequest, runtime: RuntimeDep, caller: Caller, response: Response) -> ConsentRecorded:
    """Grant or revoke one consent purpose of a user, at the time it happened.

    202: in effect for every decision from now on (a revocation: no action that needs consent, no masked feature).
    200: a later event stands (this one is older). 422: unknown purpose, time in the future, or a bad body.
    503: Redis did not take it; retrying is safe (the same event applies once).
    """
    now = runtime.service.clock.time()
    ts = now if body.ts is None else body.ts
    if ts > now + FUTURE_TOLERANCE_S:
        raise HTTPException(status_code=422, detail=f"ts {ts} is {ts - now:.0f} s in the future; send the time the "
                                                    "user gave or revoked consent")
    key = user_key(body.user_id, runtime.service.salt)
    lake_id = runtime.service.pseudonymizer(body.user_id)  # consent is kept by pseudonym, as the features
    try:
        result = runtime.consent.record(
            lake_id, body.purpose, body.granted, ts, source="api", client_id=caller, event_id=body.event_id,
            user_key=key, received=now,
        )
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    except redis.exceptions.RedisError as exc:
        raise HTTPException(status_code=503, detail=f"consent not stored, retry: {redis_failure(exc)}") from exc
    if result.applied and not body.granted:  # this worker's cached reads of the user go now (others: ConsentWatcher)
        runtime.service.feature_cache.revoke(lake_id)
    default_log().record(
        caller, "consent.grant" if body.granted else "consent.revoke", target=f"user_key:{key}", clock=now,
        purpose=body.purpose, event_ts=ts, applied=result.applied, event_id=result.event_id,
    )
    if not result.applied:
        response.status_code = status.HTTP_200_OK
    entry = result.in_effect
    return ConsentRecorded(
        event_id=result.event_id, applied=result.applied,
        in_effect=ConsentState(granted=entry.granted, ts=entry.ts, source=entry.source),
    )


@router.get(
    "/consent/{user_id}", response_model=dict[str, ConsentState], responses={**AUTH_ERRORS, **REDIS_DOWN},
)
def read_consent(
    user_id: Annotated[int, Path(ge=0, le=MAX_ID)], runtime: RuntimeDep, caller: Caller,
) -> dict[str, ConsentState]:
    """The consent events in effect for a user, by purpose (purposes without an event are left out: the CRM's
    profile row decides them)."""
    try:
        entries = runtime.consent.entries(runtime.service.pseudonymizer(user_id))
    except redis.exceptions.RedisError as exc:
        raise HTTPException(status_code=503, detail=f"consent not read, retry: {redis_failure(exc)}") from exc
    return {p: ConsentState(granted=e.granted, ts=e.ts, source=e.source) for p, e in entries.items()}
