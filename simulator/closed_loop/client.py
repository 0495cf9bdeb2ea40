"""HTTP client of the decision service, as the closed loop uses it: decisions, outcomes, raw events, the clock.

One `httpx.Client` (one keep-alive connection; a fastapi `TestClient` is one too) carries every call. Every answer
outside the documented ones raises `ServiceError` with the status and the body, and says what to do about it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import Any, Protocol

import httpx

MAX_EVENTS_PER_CALL = 500
"""Events in one POST /v1/events call, as the service allows (serving/core/schemas.py MAX_EVENTS_PER_CALL)."""

MAX_BODY_BYTES = 65_536
"""Largest request body the service takes (serving/main.py MAX_BODY_BYTES); a few hundred events fit."""

WALL_CLOCK = "wall clock"
"""What GET /healthz reports under freshness.now when the service runs on the wall clock."""

_EMPTY_BATCH = b'{"events":[]}'


class ServiceError(RuntimeError):
    """The decision service answered something the closed loop cannot go on with (status and body attached)."""

    def __init__(self, message: str, status: int | None = None, body: str = ""):
        super().__init__(message)
        self.status = status
        self.body = body


class ServiceClockError(ServiceError):
    """The service's clock cannot be driven as asked: it runs on the wall clock, or it would move backwards."""


class DecisionServiceClient(Protocol):
    """What the closed-loop driver needs from the service (ServiceClient over HTTP, or a test double)."""

    def decide(
        self, user_id: int, surface: str, context: dict[str, Any] | None = None, candidates: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """The body of POST /v1/decisions."""

    def post_outcome(self, decision_id: str, revenue: float, ts: datetime) -> dict[str, Any]:
        """The body of POST /v1/outcomes."""

    def post_events(self, events: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The merged answers of POST /v1/events over as many calls as the events need."""

    def advance_clock(self, instant: datetime) -> datetime:
        """Move the service's simulated clock to `instant`."""

    def service_clock(self) -> datetime | None:
        """The service's simulated now, or None when it runs on the wall clock."""


def _text(response: httpx.Response, limit: int = 2_000) -> str:
    """The response body as text, cut to `limit` characters for an error message."""
    text = response.text
    return text if len(text) <= limit else text[:limit] + "…"


def _fail(what: str, response: httpx.Response, hint: str = "") -> ServiceError:
    """A ServiceError naming the call, the status and the body, plus what to do."""
    message = f"{what}: the decision service answered {response.status_code}: {_text(response)}"
    return ServiceError(message + (f" ({hint})" if hint else ""), response.status_code, response.text)


def _aware(instant: datetime, name: str) -> datetime:
    """`instant` in UTC; a naive datetime is refused (the service's clock needs an offset)."""
    if instant.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (e.g. datetime(..., tzinfo=timezone.utc)), got {instant!r}")
    return instant.astimezone(timezone.utc)


class ServiceClient:
    """The decision service over one keep-alive HTTP connection (a base URL, an httpx.Client or a TestClient)."""

    def __init__(self, http: httpx.Client | str, admin_token: str | None = None, timeout_s: float = 10.0):
        self._owned = isinstance(http, str)
        self.http = httpx.Client(base_url=http, timeout=timeout_s) if isinstance(http, str) else http
        # Admin calls (the clock) need the service's HYPERLIFT_SERVING_ADMIN_TOKEN when it sets one.
        self._admin_headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection if this client opened it (a given httpx.Client stays with its owner)."""
        if self._owned:
            self.http.close()

    def decide(
        self, user_id: int, surface: str, context: dict[str, Any] | None = None, candidates: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """POST /v1/decisions; the response body (decision_id, actions with propensities, model, fallback)."""
        body: dict[str, Any] = {"user_id": int(user_id), "surface": surface}
        if context is not None:
            body["context"] = context
        if candidates is not None:
            body["candidates"] = list(candidates)
        response = self.http.post("/v1/decisions", json=body)
        if response.status_code != 200:
            hint = {404: "the surface is not configured: use one the service lists",
                    422: "the request does not fit the API or the surface's candidates"}.get(response.status_code, "")
            raise _fail(f"POST /v1/decisions for user {user_id} on {surface!r}", response, hint)
        return response.json()

    def post_outcome(self, decision_id: str, revenue: float, ts: datetime) -> dict[str, Any]:
        """POST /v1/outcomes: a purchase of `revenue` at `ts`, attributed by its decision_id; the 202 body."""
        body = {"decision_id": decision_id, "revenue": float(revenue), "ts": _aware(ts, "ts").timestamp()}
        response = self.http.post("/v1/outcomes", json=body)
        if response.status_code != 202:
            hint = "Redis did not store it: post it again" if response.status_code == 503 else ""
            raise _fail(f"POST /v1/outcomes for decision {decision_id}", response, hint)
        return response.json()

    def post_events(self, events: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """POST /v1/events in as few calls as the API allows (≤ 500 events, ≤ 64 kB each); the answers merged.

        Returns {"accepted", "rejected" (index into `events`, event_id, rule, reason), "users_updated",
        "rows_written", "calls"}. A 422 that reports the call's events (none applied, each refused by a contract
        rule) is an answer like the others: its events are counted as refused. Any other non-2xx raises.
        """
        merged: dict[str, Any] = {"accepted": 0, "rejected": [], "users_updated": 0, "rows_written": 0, "calls": 0}
        for offset, body in event_bodies(events):
            answer = self._post_event_body(body, offset)
            merged["calls"] += 1
            for name in ("accepted", "users_updated", "rows_written"):
                merged[name] += int(answer[name])
            merged["rejected"].extend({**r, "index": int(r["index"]) + offset} for r in answer["rejected"])
        return merged

    def _post_event_body(self, body: bytes, offset: int) -> dict[str, Any]:
        """One POST /v1/events call; its EventsApplied answer (a 422 listing refused events included)."""
        response = self.http.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
        if response.status_code in (200, 202):
            return response.json()
        if response.status_code == 422:
            detail = response.json().get("detail")
            if isinstance(detail, dict) and "accepted" in detail:
                return detail  # nothing applied, every event refused by a rule: refused events are counted
        hint = "retrying is safe: the service ignores replays" if response.status_code == 503 else ""
        raise _fail(f"POST /v1/events (events {offset}…)", response, hint)

    def advance_clock(self, instant: datetime) -> datetime:
        """POST /v1/admin/clock: move the service's simulated clock forward to `instant`; returns the new now."""
        instant = _aware(instant, "instant")
        response = self.http.post("/v1/admin/clock", json={"now": instant.isoformat()}, headers=self._admin_headers)
        if response.status_code == 200:
            return datetime.fromisoformat(response.json()["now"])
        if response.status_code == 409:
            detail = str(response.json().get("detail", ""))
            if WALL_CLOCK in detail:
                raise ServiceClockError(
                    "the decision service runs on the wall clock, so the closed loop cannot drive its time: start it "
                    "with HYPERLIFT_SERVING_NOW=<ISO-8601 instant at or before the first simulated day> (one worker), "
                    f"e.g. HYPERLIFT_SERVING_NOW=2026-10-31T00:00:00Z. The service said: {detail}",
                    409, response.text,
                )
            raise ServiceClockError(f"the service refused to move its clock to {instant.isoformat()}: {detail}",
                                    409, response.text)
        if response.status_code == 401:
            raise _fail("POST /v1/admin/clock", response,
                        "the service sets HYPERLIFT_SERVING_ADMIN_TOKEN: pass it as ServiceClient(..., admin_token=...)")
        raise _fail("POST /v1/admin/clock", response)

    def service_clock(self) -> datetime | None:
        """The service's simulated now from GET /healthz, or None when it runs on the wall clock."""
        response = self.http.get("/healthz")
        if response.status_code != 200:
            raise _fail("GET /healthz", response)
        now = response.json()["freshness"]["now"]
        return None if now == WALL_CLOCK else datetime.fromisoformat(now).astimezone(timezone.utc)


def event_bodies(events: Sequence[dict[str, Any]]) -> Iterator[tuple[int, bytes]]:
    """(offset of the first event, JSON body) of consecutive calls of ≤ MAX_EVENTS_PER_CALL events and ≤ MAX_BODY_BYTES."""
    chunk: list[bytes] = []
    start, size = 0, len(_EMPTY_BATCH)
    for i, event in enumerate(events):
        encoded = json.dumps(event, separators=(",", ":"), allow_nan=False).encode()
        if len(_EMPTY_BATCH) + len(encoded) > MAX_BODY_BYTES:
            raise ValueError(f"event {i} ({event.get('event_id')!r}) alone is {len(encoded)} bytes: over the "
                             f"service's {MAX_BODY_BYTES}-byte body limit")
        if chunk and (len(chunk) == MAX_EVENTS_PER_CALL or size + len(encoded) + 1 > MAX_BODY_BYTES):
            yield start, b'{"events":[' + b",".join(chunk) + b"]}"
            chunk, start, size = [], i, len(_EMPTY_BATCH)
        chunk.append(encoded)
        size += len(encoded) + (1 if len(chunk) > 1 else 0)
    if chunk:
        yield start, b'{"events":[' + b",".join(chunk) + b"]}"
