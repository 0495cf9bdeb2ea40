"""POST /v1/admin/safe-mode: the global pause switch; POST /v1/admin/clock: move a simulated clock forward;
POST /v1/admin/erasure: erase one user from every store."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Annotated

import redis
from fastapi import APIRouter, HTTPException
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from infra.audit import default_log
from infra.erasure.procedure import Target, erase
from infra.erasure.settings import ErasureSettings
from serving.api.auth import require
from serving.api.deps import RuntimeDep
from serving.api.errors import AUTH_ERRORS, BODY_ERRORS, REDIS_DOWN
from serving.core.clock import ClockError
from serving.core.schemas import ErasureReceipt, ErasureRequest, ErrorMessage
from serving.ops.api_keys import ADMIN
from serving.ops.redaction import redis_failure

log = logging.getLogger(__name__)
router = APIRouter(
    prefix="/v1/admin", tags=["admin"], dependencies=[require(ADMIN)], responses={**AUTH_ERRORS, **BODY_ERRORS}
)
AdminCaller = Annotated[str, require(ADMIN)]  # the same dependency as the router's: run once per request

LATEST_CLOCK = datetime(2200, 1, 1, tzinfo=timezone.utc)
"""The simulated clock stops short of pandas' last timestamp (2262-04-11), which the event and feature code reads
it as; a year-9999 clock made every later event call fail."""


class SafeModeRequest(BaseModel):
    """Turn safe mode on or off, saying why (kept with the switch and logged)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool
    reason: str = Field(min_length=1, max_length=500)


@router.post("/safe-mode", responses=REDIS_DOWN)
def set_safe_mode(body: SafeModeRequest, runtime: RuntimeDep, caller: AdminCaller) -> dict[str, object]:
    """Every surface of every worker serves its neutral action within one poll interval (this worker at once)."""
    safe_mode = runtime.service.safe_mode
    log.warning("safe mode %s requested by API key %r", "on" if body.enabled else "off", caller)
    try:
        safe_mode.set(body.enabled, body.reason)
    except redis.exceptions.RedisError as exc:
        raise HTTPException(
            status_code=503,
            detail=f"Redis did not take the switch ({redis_failure(exc)}); set HYPERLIFT_SERVING_SAFE_MODE=true and "
            "restart workers",
        ) from exc
    runtime.service.metrics.safe_mode.set(1 if safe_mode.enabled else 0)
    default_log().record(caller, "safe_mode.on" if body.enabled else "safe_mode.off", target="all surfaces",
                         reason=body.reason, clock=runtime.service.clock.time())
    return {"safe_mode": safe_mode.enabled, "reason": safe_mode.reason}


class ClockRequest(BaseModel):
    """The simulated instant to move the service's clock to (ISO-8601 with offset; never earlier than now)."""

    model_config = ConfigDict(extra="forbid")

    now: AwareDatetime

    @field_validator("now", mode="before")
    @classmethod
    def _text(cls, value: object) -> object:
        """ISO-8601 text only, as the schema says (pydantic would read a number as epoch seconds)."""
        if not isinstance(value, str):
            raise ValueError("now must be an ISO-8601 string with an offset, e.g. 2026-11-01T06:00:00Z")
        return value


@router.post(
    "/clock",
    responses={409: {"model": ErrorMessage, "description": "The wall clock, an instant earlier than the clock's, "
                                                            "or one from 2200 on."}},
)
def advance_clock(body: ClockRequest, runtime: RuntimeDep, caller: AdminCaller) -> dict[str, datetime]:
    """Move this worker's simulated clock forward (freshness, caps, budget pacing and the trace follow it)."""
    try:
        instant = body.now.astimezone(timezone.utc)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00, before the first UTC instant Python holds
        instant = None
    if instant is None or instant >= LATEST_CLOCK:
        raise HTTPException(
            status_code=409,
            detail=f"now {body.now.isoformat()} is outside what the clock holds: send an instant before "
            f"{LATEST_CLOCK.isoformat()} and not earlier than the clock's ({runtime.service.clock.describe()})",
        )
    before = runtime.service.clock.describe()
    try:
        now = runtime.service.clock.advance_to(instant)
    except ClockError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    default_log().record(caller, "clock.advance", target="simulated clock", clock=now.timestamp(), before=before,
                         now=now.isoformat())
    return {"now": now}


_erasing = threading.Lock()  # one erasure at a time per worker: each rewrites the lake and Redis's files


@router.post(
    "/erasure", response_model=ErasureReceipt,
    responses={409: {"model": ErrorMessage, "description": "Another erasure is running in this worker; retry."},
               503: {"model": ErrorMessage, "description": "Redis or the disk failed part way; run it again (an "
                                                          "erasure repeated finds what is left and erases that)."}},
)
def erase_user(body: ErasureRequest, runtime: RuntimeDep, caller: AdminCaller) -> ErasureReceipt:
    """Erase one user from every store now (the call waits: seconds on a small lake) and answer the receipt's summary;
    the receipt lists what was touched (docs/privacy.md)."""
    settings = runtime.settings
    target = Target(settings.platform(), settings.redis_url, runtime.service.salt, settings.wal_root(),
                    tuple(ErasureSettings().service_log_dirs))
    if not _erasing.acquire(blocking=False):
        raise HTTPException(status_code=409, detail="another erasure is running in this worker; retry when it ends")
    started = time.monotonic()
    try:
        runtime.service.feature_cache.revoke(runtime.service.pseudonymizer(body.user_id))  # this worker's reads of it
        receipt = erase(body.user_id, target, actor=caller, reason=body.reason)
    except (redis.exceptions.RedisError, OSError, RuntimeError) as exc:
        log.error("erasure requested by %r failed part way: %s", caller, redis_failure(exc)
                  if isinstance(exc, redis.exceptions.RedisError) else exc)
        raise HTTPException(status_code=503, detail=f"the erasure stopped part way ({type(exc).__name__}); run it "
                                                    "again: a repeat erases what is left") from exc
    finally:
        _erasing.release()
    return ErasureReceipt(user_key=receipt.user_key, receipt=receipt.path, touched=receipt.summary(),
                          seconds=round(time.monotonic() - started, 3))
