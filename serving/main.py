"""FastAPI application: assembly only (`uvicorn serving.main:app`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
import redis
from fastapi import FastAPI

from feature_repo.store import feature_store
from serving.breaker import CircuitBreaker
from serving.champion import ChampionWatcher, load_champion
from serving.config import ServingSettings
from serving.decision_log import DecisionLog
from serving.feature_cache import LastKnownGood
from serving.routes import decisions, health
from serving.service import DecisionService


def build_service(settings: ServingSettings) -> tuple[DecisionService, ChampionWatcher]:
    """Open the feature store, load the champion, and wire the decision service and its champion watcher."""
    platform = settings.platform()
    timeout_s = settings.redis_timeout_ms / 1000.0
    store = feature_store(settings.redis_url, platform, redis_timeout_s=timeout_s)
    champion = load_champion(platform.mlflow_uri, settings.model_name, settings.model_alias, store)
    # retry=None: redis-py's default retries would hold a decision for seconds when Redis hangs.
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=None
    )
    decision_log = DecisionLog(client, settings.decision_stream, settings.decision_stream_maxlen)
    service = DecisionService(
        champion,
        decision_log,
        settings.epsilon,
        settings.control_action,
        np.random.default_rng(settings.seed),
        CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s),
        LastKnownGood(settings.last_known_good_max_entries, settings.last_known_good_max_age_s),
    )
    watcher = ChampionWatcher(
        service, platform.mlflow_uri, settings.model_name, settings.model_alias, store, settings.model_refresh_s
    )
    return service, watcher


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    """The decision service app; settings from the environment unless given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.service, watcher = build_service(settings or ServingSettings())
        watcher.start()
        yield
        watcher.stop()

    app = FastAPI(title="Hyperlift decision service", version="0.1.0", lifespan=lifespan)
    app.include_router(decisions.router)
    app.include_router(health.router)
    return app


app = create_app()
