"""GET /healthz, /readyz (open: probes), /metrics (Prometheus) and /v1/stats (JSON summary) (the ops scope)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.api.auth import require
from serving.api.deps import RuntimeDep
from serving.api.errors import AUTH_ERRORS, NOT_READY
from serving.core.schemas import Readiness
from serving.decision.service import FALLBACKS
from serving.ops.api_keys import OPS

router = APIRouter(tags=["health"])
OPS_ONLY = [require(OPS)]


def _models(runtime: RuntimeDep) -> dict[str, Any]:
    return {
        f"{name}@{alias}": (
            {"version": c.ref.version, "feature_service": c.features.feature_service_name} if c else None
        )
        for (name, alias), c in runtime.service.champions.items()
    }


@router.get("/healthz")
def healthz(runtime: RuntimeDep) -> dict[str, Any]:
    """Liveness plus what is loaded: 'ok' with every champion, 'degraded' when a surface can only fall back."""
    service = runtime.service
    models = _models(runtime)
    return {
        "status": "ok" if all(models.values()) and not service.safe_mode.enabled else "degraded",
        "models": models,
        "surfaces": sorted(service.surfaces),
        "policy_version": service.config.version,
        "safe_mode": service.safe_mode.enabled,
        "freshness": _freshness(runtime),
    }


def _freshness(runtime: RuntimeDep) -> dict[str, Any]:
    """The clock freshness is judged by and each served view's contract, as the Feast registry declares it."""
    service = runtime.service
    return {
        "now": service.clock.describe(),
        "views": {
            name: {"max_staleness_s": view.max_staleness.total_seconds(), "on_stale": view.on_stale}
            for name, view in sorted(service.freshness_contracts().items())
        },
    }


@router.get("/readyz", response_model=Readiness, responses=NOT_READY)
def readyz(runtime: RuntimeDep) -> JSONResponse:
    """200 when every surface's champion is loaded and Redis answered the last poll; else 503 with the reasons."""
    service = runtime.service
    problems = [f"no model for {key}" for key, value in _models(runtime).items() if value is None]
    if service.safe_mode.redis_ok is False:
        problems.append("Redis did not answer the last poll")
    if service.breaker.state != "closed":
        problems.append(f"online-store circuit breaker is {service.breaker.state}")
    return JSONResponse({"ready": not problems, "problems": problems}, status_code=503 if problems else 200)


@router.get(
    "/metrics", response_class=Response, dependencies=OPS_ONLY,  # Response: the 401/403 stay application/json
    responses={
        200: {"description": "Prometheus text exposition format.", "content": {"text/plain": {}}}, **AUTH_ERRORS
    },
)
def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus exposition: latency per segment, fallbacks by reason, exploration, budget spend, ..."""
    if runtime.shared_metrics is not None:  # several workers: every one's counters in this scrape
        return Response(runtime.shared_metrics.scrape(), media_type=CONTENT_TYPE_LATEST)
    runtime.refresh_gauges()
    return Response(generate_latest(runtime.service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/stats", dependencies=OPS_ONLY, responses=AUTH_ERRORS)
def stats(runtime: RuntimeDep) -> dict[str, Any]:
    """A JSON summary of the counters (for people and scripts without Prometheus)."""
    service = runtime.service
    m = service.metrics
    return {
        "decisions": m.total("hyperlift_decisions_total"),
        "fallbacks": {r: n for r in FALLBACKS if (n := m.total("hyperlift_fallbacks_total", reason=r))},
        "stale_feature_reads": {
            view: n for view in sorted(service.freshness_contracts())
            if (n := m.total("hyperlift_stale_feature_reads_total", feature_view=view))
        },
        "shed": m.total("hyperlift_shed_requests_total"),
        "decision_log_failures": m.total("hyperlift_decision_log_failures_total"),
        "model_swaps": m.total("hyperlift_model_swaps_total"),
        "model_refresh_failures": m.total("hyperlift_model_refresh_failures_total"),
        "feature_store_breaker": {"state": service.breaker.state, "opened": service.breaker.opened},
        "safe_mode": service.safe_mode.enabled,
    }
