"""Serving settings, typed and read from the environment once."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from infra.settings import HyperliftSettings


class ServingSettings(BaseSettings):
    """What the decision service connects to and how it explores."""

    model_config = SettingsConfigDict(env_prefix="HYPERLIFT_SERVING_", extra="ignore", protected_namespaces=())

    redis_url: str = Field(validation_alias="REDIS_URL", description="The Redis server of the Feast online store.")
    model_name: str = "hyperlift_uplift"
    model_alias: str = "champion"
    control_action: str = Field(default="no_action", description="Served when no model can be used.")
    model_refresh_s: float = Field(
        default=30.0, ge=0.0, description="How often to check the model alias for a new version (0: never)."
    )
    redis_timeout_ms: float = Field(
        default=50.0, gt=0, description="Bound on each Redis call of a decision (features, log); then the fallback."
    )
    breaker_failures: int = Field(default=5, ge=1, description="Consecutive feature-read failures that open the breaker.")
    breaker_cooldown_s: float = Field(default=5.0, gt=0, description="How long an open breaker skips the online store.")
    last_known_good_max_age_s: float = Field(
        default=300.0, gt=0, description="How old a remembered feature read may be to score a user when Redis fails."
    )
    last_known_good_max_entries: int = Field(default=100_000, ge=1, description="Users remembered (LRU).")
    epsilon: float = Field(default=0.05, ge=0.0, le=1.0, description="Share of traffic explored uniformly.")
    seed: int | None = Field(default=None, description="Seed of the exploration RNG (None: from the OS).")
    decision_stream: str = "hyperlift:decisions"
    decision_stream_maxlen: int = 1_000_000

    def platform(self) -> HyperliftSettings:
        """The shared platform settings (home folder, MLflow store)."""
        return HyperliftSettings()
