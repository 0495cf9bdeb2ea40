"""POST /v1/admin/safe-mode: the global pause switch."""

from __future__ import annotations

import redis
from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from serving.deps import RuntimeDep, require_admin

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
