"""Settings of erasure and retention, read from the environment once (docs/privacy.md has the table)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ErasureSettings(BaseSettings):
    """Where, besides the home, an erasure looks."""

    model_config = SettingsConfigDict(env_prefix="HYPERLIFT_ERASURE_", extra="ignore")

    service_log_dirs: list[Path] = Field(
        default_factory=list,
        description="HYPERLIFT_ERASURE_SERVICE_LOG_DIRS='[\"/var/log/hyperlift\"]': folders where the deployment keeps "
        "the decision service's logs (it writes JSON lines to stderr); their *.log and *.jsonl files are scrubbed.",
    )


class RetentionSettings(BaseSettings):
    """How long each store keeps data, in days (0: keep forever). The retention job deletes what is older."""

    model_config = SettingsConfigDict(env_prefix="HYPERLIFT_RETENTION_", extra="ignore")

    raw_events_days: int = Field(default=90, ge=0, description="raw/events/<arrival day>.parquet")
    validated_events_days: int = Field(default=400, ge=0, description="validated/events: training's history")
    quarantine_days: int = Field(default=30, ge=0, description="quarantine/events and quarantine/stream")
    features_days: int = Field(default=400, ge=0, description="features/activity_tiles and features/user_activity")
    decision_log_days: int = Field(default=400, ge=0, description="decisions, outcomes, decision_outcomes")
    consent_days: int = Field(default=2190, ge=0, description="the consent lake: proof of consent, six years")
    stream_days: int = Field(
        default=7, ge=0, description="Redis stream entries the lake has (decisions, outcomes, quarantine, consent)"
    )
    spill_days: int = Field(default=30, ge=0, description="decision write-ahead segments (normally gone in seconds)")
    logs_days: int = Field(default=30, ge=0, description="Dagster compute logs and *.log under the home")
    audit_days: int = Field(default=2190, ge=0, description="the audit trail and erasure receipts: six years")
