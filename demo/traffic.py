"""Send decision requests to a running decision service and time them."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import numpy as np


@dataclass
class Served:
    """What the service answered, request by request, with the client-side round-trip time."""

    user_ids: np.ndarray
    actions: list[str]
    propensities: np.ndarray
    fallbacks: list[str | None]
    round_trip_ms: np.ndarray
    arms: list[dict[str, str]]
    model: dict | None
    feature_service: str | None
    decision_ids: list[str]
    served_at: np.ndarray  # epoch seconds of each decision on the service's clock (simulated, or the wall clock)


def wait_healthy(base_url: str, timeout_s: float = 60.0) -> dict:
    """Poll /healthz until the service answers; returns its body."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{base_url}/healthz", timeout=2.0)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError as exc:
            last_error = exc
        time.sleep(0.25)
    raise TimeoutError(f"decision service at {base_url} not healthy after {timeout_s}s (last error: {last_error})")


def send_decisions(
    base_url: str,
    user_ids: np.ndarray,
    surface: str = "home",
    report_every: int = 1000,
    day: datetime | None = None,
    clock_steps: int = 96,
) -> Served:
    """POST one /v1/decisions per user id over one keep-alive connection; raises on any non-200 answer.

    With `day` (the service runs on a simulated clock), the requests are spread over that day: the clock moves
    forward `clock_steps` times (POST /v1/admin/clock), so caps count and budgets pace as users arriving through
    the day would see them, and the trace is stamped in that day.
    """
    actions, fallbacks, propensities, rtt, arms, decision_ids, served_at = [], [], [], [], [], [], []
    instant: datetime | None = None
    model, feature_service = None, None
    n = len(user_ids)
    token = os.environ.get("HYPERLIFT_SERVING_ADMIN_TOKEN")  # moving the clock is an admin call
    admin = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=base_url, timeout=5.0) as client:
        for i, user_id in enumerate(user_ids, start=1):
            if day is not None and ((i - 1) * clock_steps) // n != ((i - 2) * clock_steps) // n:
                instant = day + timedelta(days=1) * (((i - 1) * clock_steps) // n) / clock_steps
                client.post("/v1/admin/clock", json={"now": instant.isoformat()}, headers=admin).raise_for_status()
            served_at.append(instant.timestamp() if instant is not None else time.time())
            started = time.perf_counter()
            response = client.post("/v1/decisions", json={"user_id": int(user_id), "surface": surface})
            rtt.append((time.perf_counter() - started) * 1000.0)
            response.raise_for_status()
            body = response.json()
            actions.append(body["actions"][0]["action_id"])
            propensities.append(body["actions"][0]["propensity"])
            fallbacks.append(body["fallback"])
            arms.append(body["experiments"])
            decision_ids.append(body["decision_id"])
            model = model or body["model"]
            feature_service = feature_service or body["feature_service"]
            if i % report_every == 0 or i == len(user_ids):
                print(f"  decisions: {i}/{len(user_ids)}  p50 {np.percentile(rtt, 50):.2f} ms", flush=True)
    return Served(np.asarray(user_ids), actions, np.asarray(propensities), fallbacks, np.asarray(rtt), arms, model,
                  feature_service, decision_ids, np.asarray(served_at, dtype=float))
