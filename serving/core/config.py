"""Serving settings, typed and read from the environment once (policy per surface lives in `conf/`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AwareDatetime, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from feature_repo.event_time import Lateness
from infra.settings import HyperliftSettings
from serving.store.decision_log import DECISION_STREAM, OUTCOME_STREAM
from serving.decision.surfaces import DEFAULT_CONFIG_DIR


class ClockSettings(BaseSettings):
    """Where the service's clock starts; its own class so the service can read it alone."""

    model_config = SettingsConfigDict(env_prefix="HYPERLIFT_SERVING_", extra="ignore", protected_namespaces=())

    now: AwareDatetime | None = Field(
        default=None,
        description="Simulated 'now', ISO-8601 with offset (e.g. 2026-10-31T00:00:00Z): the clock that freshness, caps, "
        "budget pacing, the trace and the intakes read starts there and moves only by POST /v1/admin/clock "
        "(simulation and replay); unset: the wall clock.",
    )


class ServingSettings(ClockSettings):
    """What the decision service connects to and how it protects itself."""

    model_config = SettingsConfigDict(env_prefix="HYPERLIFT_SERVING_", extra="ignore", protected_namespaces=())

    redis_url: str = Field(validation_alias="REDIS_URL", description="The Redis server of the Feast online store.")
    config_dir: Path = Field(default=DEFAULT_CONFIG_DIR, description="Folder with surfaces/ and regions/ YAML files.")
    experiments_file: Path = Field(default=DEFAULT_CONFIG_DIR / "experiments.yaml")
    model_refresh_s: float = Field(
        default=30.0, ge=0.0, description="How often to check the model aliases for a new version (0: never)."
    )
    redis_timeout_ms: float = Field(
        default=50.0, gt=0, description="Bound on each Redis call of a decision (features, caps, budgets); then the fallback."
    )
    breaker_failures: int = Field(default=5, ge=1, description="Consecutive Redis failures that open the breaker.")
    breaker_cooldown_s: float = Field(default=5.0, gt=0, description="How long an open breaker skips Redis.")
    last_known_good_max_age_s: float = Field(
        default=300.0, gt=0, description="How old a remembered feature read may be to score a user when Redis fails."
    )
    last_known_good_max_entries: int = Field(default=100_000, ge=1, description="Users remembered (LRU).")
    max_in_flight: int = Field(
        default=8, ge=1,
        description="Decisions in flight at once per worker (on its event loop, awaiting Redis); beyond: the neutral "
        "action at once, 'overloaded'. Bounds the work a burst can queue up behind the decisions already started.",
    )
    safe_mode: bool = Field(default=False, description="Force safe mode on in this process (neutral everywhere).")
    safe_mode_key: str = "hyperlift:safe_mode"
    safe_mode_poll_s: float = Field(default=1.0, gt=0, description="How often each worker reads the safe-mode switch.")
    admin_token: str | None = Field(default=None, description="If set, admin endpoints need `Authorization: Bearer`.")
    hash_salt: str = Field(default="hyperlift-dev-salt", description="Key of the user/context hashes in the trace.")
    seed: int | None = Field(default=None, description="Seed of the exploration RNG (None: from the OS).")
    decision_stream: str = DECISION_STREAM
    decision_stream_maxlen: int = 1_000_000
    outcome_stream: str = OUTCOME_STREAM
    trace_queue_size: int = Field(default=10_000, ge=1, description="Decisions waiting for the trace writer.")
    trace_redis_timeout_ms: float = Field(
        default=150.0, gt=0,
        description="Bound on each Redis call of the trace writer's thread (off the request path; a batch of 500 "
        "records is ~2 MB, which Redis takes in ~10 ms). A timeout only means the batch goes again from disk. "
        "Records that arrive meanwhile wait in memory: with the 20 ms linger this bounds what a SIGKILL can cost "
        "(170 ms of decisions, below the fsync interval, and counted at the next start).",
    )
    decision_wal_dir: Path | None = Field(
        default=None,
        description="Local folder of the decision log's write-ahead files (one sub-folder per database and stream, one "
        "per process inside it); unset: $HYPERLIFT_HOME/serving/decision_wal. Must be local disk that outlives the "
        "process (a volume in containers), shared by the service's successive processes on this host.",
    )
    decision_wal_sync_ms: float = Field(
        default=200.0, gt=0,
        description="fsync interval of the write-ahead file: what a power loss can cost (a SIGKILL of the process "
        "loses only records not yet written, counted at the next start).",
    )
    decision_wal_max_mb: float = Field(
        default=1024.0, gt=0,
        description="Disk budget of this process's write-ahead files (records the lake has not confirmed). Beyond it "
        "the oldest records Redis already has are deleted first (counted: released_unconfirmed, they then rely on "
        "Redis's durability); records are dropped (disk_budget) only when none on disk is in Redis yet. Size it for "
        "the longest drain outage to ride out with full protection: about 4 kB per decision with 50 candidates.",
    )
    decision_wal_segment_mb: float = Field(
        default=8.0, gt=0, description="Size at which a write-ahead segment is closed (deletion is per segment)."
    )
    decision_log_close_s: float = Field(
        default=5.0, ge=0,
        description="At shutdown, how long the trace writer keeps sending to Redis; what is left stays on disk and "
        "the next process sends it.",
    )
    decision_log_ack_poll_s: float = Field(
        default=1.0, gt=0, description="How often the trace writer reads the drain's receipts and Redis's run_id."
    )
    safe_mode_file: Path | None = Field(
        default=None,
        description="Local durable copy of the safe-mode switch, re-asserted into Redis when a Redis restart lost "
        "it; unset: $HYPERLIFT_HOME/serving/safe_mode.json.",
    )
    log_decisions: bool = Field(default=True, description="One JSON log line per decision (keyed by decision_id).")
    events_redis_timeout_ms: float = Field(
        default=1000.0, gt=0,
        description="Bound on the Redis calls of /v1/events (a call of a hundred events is one pipeline; it is not on "
        "the decision's latency budget, and a timeout makes the client retry the whole call).",
    )
    allowed_lateness_days: int = Field(
        default=Lateness().allowed_days, ge=0,
        description="Events of /v1/events older than the arrival day's start minus this are behind the watermark "
        "(the batch pipeline's EventTimeResource default is the same value).",
    )

    def platform(self) -> HyperliftSettings:
        """The shared platform settings (home folder, MLflow store)."""
        return HyperliftSettings()

    def wal_root(self) -> Path:
        """Root of the decision log's write-ahead folders."""
        return self.decision_wal_dir or self.platform().home / "serving" / "decision_wal"

    def safe_mode_path(self) -> Path:
        """Where the safe-mode switch is kept on local disk."""
        return self.safe_mode_file or self.platform().home / "serving" / "safe_mode.json"
