"""Serving settings, typed and read from the environment once (policy per surface lives in `conf/`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from feature_repo.event_time import Lateness
from infra import keys
from infra.settings import HyperliftSettings
from serving.decision.identity import honour_former_salts
from serving.decision.surfaces import DEFAULT_CONFIG_DIR
from serving.store.decision_log import DECISION_STREAM, OUTCOME_STREAM


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
    admin_token: str | None = Field(
        default=None,
        description="An extra API key with the admin scope only (key id 'admin-token'); in dev mode, when set, it is "
        "still required on /v1/admin/*.",
    )
    hash_salt: str = Field(
        default="hyperlift-dev-salt",
        description="Key of the user/context hashes in the trace, of outcome ids and of the check in decision ids. "
        "Unset: the trace salt of the key file (infra/keys.py; generated there on first use in dev mode); with "
        "neither, the public default, which production mode refuses.",
    )
    # Authentication (docs/security.md).
    mode: Literal["production", "dev"] = Field(
        default="production",
        description="production: every call but /healthz, /readyz and the API docs needs an API key with its scope, "
        "and start-up is refused with the default hash_salt or no key in api_keys_file. dev: open (except /v1/admin/* "
        "when admin_token is set), logged loudly at start-up; for one machine only (make serve, make demo, make loop).",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="YAML (or JSON) file of API keys: per key an id, the SHA-256 of its secret and its scopes "
        "(python -m serving.ops.api_keys create ... writes it).",
    )
    outcome_idempotency_ttl_s: int = Field(
        default=7 * 86_400, ge=60,
        description="How long an outcome's Idempotency-Key is remembered: a retry within it is answered as a duplicate "
        "and not stored again (the lake also drops a later retry: its outcome_id is the same).",
    )
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
    metrics_dir: Path | None = Field(
        default=None,
        description="With several uvicorn workers: a folder every worker publishes its metrics to, so that one "
        "scrape of /metrics covers them all (serving/ops/metrics_shared.py; `make serve WORKERS=n` sets it). Unset: "
        "each worker's /metrics is its own.",
    )
    metrics_publish_s: float = Field(
        default=1.0, gt=0, description="With metrics_dir: how often a worker publishes (the most a sibling's figures "
        "in a scrape are behind)."
    )
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
    # Overload and slow clients (docs/decision-service.md, "Overload and slow clients"): the rate limit is
    # serving/api/rate_limit.py, the connection bounds serving/api/connection_limits.py (uvicorn --http, make serve),
    # the breaker's probe serving/ops/breaker.py.
    rate_limit_per_s: float = Field(
        default=0.0, ge=0,
        description="Requests per second each client may make (a token bucket per client key: the API key, else the "
        "client address), per worker; beyond: 429 with Retry-After. 0: off, the default: a shop's backend usually "
        "calls with one key for all of its users (and in dev mode, behind a load balancer, all traffic has one "
        "address), so the limit must be sized to the deployment's callers; /healthz, /readyz and /metrics are never "
        "limited.",
    )
    rate_limit_burst: int = Field(
        default=100, ge=1, description="Requests a client may make at once above its rate (the bucket's size)."
    )
    rate_limit_max_keys: int = Field(
        default=10_000, ge=1,
        description="Clients whose buckets are kept per worker (~300 bytes each); beyond, the least recently seen "
        "is forgotten (it starts again with a full bucket), so a flood of new keys cannot grow memory.",
    )
    header_timeout_s: float = Field(
        default=5.0, gt=0,
        description="Time a client has to send a request's headers, from its connection or the request's first "
        "byte; then 408 and the connection is closed (an idle new connection is just closed).",
    )
    body_timeout_s: float = Field(
        default=5.0, gt=0,
        description="Time a client has to send a request's whole body after its headers; then 408 and the "
        "connection is closed (a decision body is < 10 kB: one packet).",
    )
    max_connections: int = Field(
        default=1000, ge=1,
        description="Connections a worker holds at once; one more is answered 503 and closed on arrival, the "
        "connections already open are still served. Keep it under the open-files limit (ulimit -n).",
    )
    breaker_probe_interval_s: float = Field(
        default=0.25, gt=0,
        description="While the online-store breaker is open: how often a PING probes Redis; the first answered "
        "closes the breaker (then breaker_cooldown_s only applies when no probe can run).",
    )

    @model_validator(mode="after")
    def _trace_salt_from_keys(self) -> "ServingSettings":
        """An unset hash_salt is the key file's current trace salt (made there in dev mode); decision ids checked
        under its retired, uncompromised versions stay honoured (outcomes of decisions made before a rotation)."""
        if "hash_salt" not in self.model_fields_set:
            stored = keys.trace_salt(create=self.mode == "dev")
            if stored is not None:
                self.hash_salt = stored
        honour_former_salts(self.hash_salt, keys.trusted_former_salts(self.hash_salt))
        return self

    def platform(self) -> HyperliftSettings:
        """The shared platform settings (home folder, MLflow store)."""
        return HyperliftSettings()

    def wal_root(self) -> Path:
        """Root of the decision log's write-ahead folders."""
        return self.decision_wal_dir or self.platform().home / "serving" / "decision_wal"

    def safe_mode_path(self) -> Path:
        """Where the safe-mode switch is kept on local disk."""
        return self.safe_mode_file or self.platform().home / "serving" / "safe_mode.json"
