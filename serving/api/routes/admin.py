"""POST /v1/admin/safe-mode: the global pause switch; POST /v1/admin/clock: move a simulated clock forward."""

from __future__ import annotations

from datetime import datetime

import redis
from fastapi import APIRouter, Depends, HTTPException
from pydantic import AwareDatetime, BaseModel, Field

from serving.api.deps import RuntimeDep, require_admin
from serving.core.clock import ClockError

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])


class SafeModeRequest(BaseModel):
    """Turn safe mode on or off, saying why (kept with the switch and logged)."""

    enabled: bool
    reason: str = Field(min_length=1, max_length=500)


@router.post("/safe-mode")
def set_safe_mode(body: SafeModeRequest, runtime: RuntimeDep) -> dict[str, object]:
    """Every surface of every worker serves its neutral action within one poll interval (this worker at once)."""
    safe_mode = runtime.service.safe_mode
    try:
        safe_mode.set(body.enabled, body.reason)
    except redis.exceptions.RedisError as exc:
        raise HTTPException(
            status_code=503,
            detail=f"Redis did not take the switch ({exc}); set HYPERLIFT_SERVING_SAFE_MODE=true and restart workers",
        ) from exc
    runtime.service.metrics.safe_mode.set(1 if safe_mode.enabled else 0)
    return {"safe_mode": safe_mode.enabled, "reason": safe_mode.reason}


class ClockRequest(BaseModel):
    """The simulated instant to move the service's clock to (ISO-8601 with offset; never earlier than now)."""

    now: AwareDatetime


@router.post("/clock", responses={409: {"description": "the wall clock, or an instant earlier than the clock's"}})
def advance_clock(body: ClockRequest, runtime: RuntimeDep) -> dict[str, datetime]:
    """Move this worker's simulated clock forward (freshness, caps, budget pacing and the trace follow it)."""
    try:
        return {"now": runtime.service.clock.advance_to(body.now)}
    except ClockError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
