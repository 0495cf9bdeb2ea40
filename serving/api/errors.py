"""Error answers as the OpenAPI document declares them: the 422 body of a request that broke the schema (one
rendering for FastAPI's routes and the decision fast path), and the documented error statuses of each operation."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from serving.core.schemas import ErrorMessage, EventsRefused, InvalidRequest, Readiness

_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def json_safe(value: Any) -> Any:
    """`value` as strict JSON can carry it. A refused request is echoed back in its errors' `input`, and what
    Python's reader accepts (NaN, Infinity) or what never was text (bytes that are not UTF-8) would make the answer
    itself fail to render: a 500 in place of the 422. Non-finite numbers become their names, bytes text (with U+FFFD
    for what is not UTF-8), anything else without a JSON form its `str`."""
    if isinstance(value, float):
        return value if math.isfinite(value) else _NON_FINITE.get(value, "NaN")
    if value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return str(value)


def validation_detail(errors: Iterable[dict[str, Any]], prefix: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The `detail` of a 422: pydantic's errors without their documentation URLs, located under `prefix` (the
    fast path's pydantic errors start at the model; FastAPI's already at "body"), in strict JSON."""
    detail = []
    for error in errors:
        issue = {"type": error["type"], "loc": [*prefix, *error["loc"]], "msg": error["msg"]}
        if "input" in error:
            issue["input"] = error["input"]
        if error.get("ctx"):
            issue["ctx"] = error["ctx"]
        detail.append(json_safe(issue))
    return detail


async def request_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 for a body that broke the schema, rendered so that any input can be echoed (see `json_safe`)."""
    return JSONResponse({"detail": validation_detail(exc.errors())}, status_code=422)


def _answer(model: type, description: str) -> dict[str, Any]:
    return {"model": model, "description": description}


BAD_BODY = {400: _answer(ErrorMessage, "The body could not be read as JSON text (e.g. it is not UTF-8).")}
TOO_LARGE = {413: _answer(ErrorMessage, "The body is over the 64 kB limit (declared or streamed).")}
INVALID = {422: _answer(InvalidRequest, "The body broke the schema (the issues), or a rule it cannot state.")}
EVENTS_INVALID = {422: _answer(EventsRefused, "The body broke the schema, or no event was applied and some broke "
                                              "a contract rule (each with its rule).")}
UNKNOWN_SURFACE = {404: _answer(ErrorMessage, "The surface is not configured (the message names the ones that are).")}
REDIS_DOWN = {503: _answer(ErrorMessage, "Redis did not take the write; nothing was kept, retrying is safe.")}
AUTH_ERRORS = {
    401: _answer(ErrorMessage, "No valid API key was sent (`Authorization: Bearer <key>`); WWW-Authenticate: Bearer."),
    403: _answer(ErrorMessage, "The API key does not have the scope this operation needs."),
}
NOT_READY = {503: _answer(Readiness, "Not ready: the reasons are listed.")}
BODY_ERRORS = {**BAD_BODY, **TOO_LARGE, **INVALID}
"""What any operation with a JSON body may answer before its handler runs."""
