"""GET /healthz and GET /metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from serving.deps import ServiceDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(service: ServiceDep) -> dict[str, Any]:
    """Liveness plus what is loaded: 'ok' with a champion, 'degraded' when only the fallback can answer."""
    champion = service.champion
    return {
        "status": "ok" if champion else "degraded",
        "model": {"name": champion.ref.name, "version": champion.ref.version} if champion else None,
        "feature_service": champion.features.feature_service_name if champion else None,
    }


@router.get("/metrics")
def metrics(service: ServiceDep) -> dict[str, Any]:
    """Decision, fallback and chosen-action counters; decision-log append failures."""
    m = service.metrics
    return {
        "decisions": m.decisions,
        "fallbacks": dict(m.fallbacks),
        "chosen": dict(m.chosen),
        "decision_log_failures": service.decision_log.failures,
        "model_swaps": m.model_swaps,
        "model_refresh_failures": m.model_refresh_failures,
        "feature_store_breaker": {"state": service.breaker.state, "opened": service.breaker.opened},
    }
