"""The worker's runtime: everything start-up builds (API keys, stores, champions, the decision service, the intakes)
and shutdown stops. Routes reach it through `serving.api.deps`; `serving.main` only assembles the app around it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from feature_repo.event_time import Lateness
from feature_repo.online_writer import OnlineWriter
from feature_repo.store import feature_store
from feature_repo.pseudonyms import lake_pseudonymizer
from feature_repo.stream import StreamUpdater
from feature_repo.transforms import REGIONS
from infra.redis_cluster import redis_client, slot_client
from serving.core.clock import Clock
from serving.core.config import ServingSettings
from serving.decision.champion import ChampionWatcher, load_champions, model_keys
from serving.decision.experiments import ExperimentAssigner, load_experiments
from serving.decision.items import ItemSurface, build_item_surfaces
from serving.decision.service import DecisionService
from serving.decision.surfaces import load_policy_config
from serving.ops.admission import Admission
from serving.ops.api_keys import KeyRing, build_key_ring
from serving.ops.breaker import CircuitBreaker
from serving.ops.cautious import CautiousSwitch
from serving.ops.parity import ParityCaps
from serving.ops.metrics import ServiceMetrics
from serving.ops.metrics_shared import SharedExposition
from serving.ops.safe_mode import SafeMode
from serving.policy.consent import consent_purposes
from serving.store.consent import ConsentStore, ConsentWatcher
from serving.store.events import EventIntake
from serving.store.feature_cache import LastKnownGood
from serving.store.outcomes import OutcomeLog
from serving.store.redis_async import AsyncRedis, async_redis
from serving.store.trace import TraceWriter
from serving.store.wal import destination_dir
from training.guards.config import load_guard_config


@dataclass
class Runtime:
    """Everything the app starts at start-up and stops at shutdown."""

    service: DecisionService
    outcomes: OutcomeLog
    events: EventIntake
    watcher: ChampionWatcher
    admission: Admission
    settings: ServingSettings
    keys: KeyRing  # who may call what (serving.api.auth checks it)
    consent: ConsentStore  # consent events: POST /v1/consent writes, every decision reads (serving/store/consent.py)
    consent_watcher: ConsentWatcher  # revocations → the last-known-good cache of this worker
    shared_metrics: SharedExposition | None = None  # every worker's metrics in one scrape (settings.metrics_dir)

    def refresh_gauges(self) -> None:
        """The gauges of state read at scrape time: the online-store breaker and safe mode."""
        self.service.metrics.breaker_state.set(1 if self.service.breaker.state == "open" else 0)
        self.service.metrics.safe_mode.set(1 if self.service.safe_mode.enabled else 0)

    def start(self) -> None:
        """Start the background threads (safe-mode poll, champion watcher, item index watchers, metrics publisher)."""
        if self.shared_metrics is not None:
            self.shared_metrics.start()
        self.service.safe_mode.start()
        if self.service.cautious is not None:
            self.service.cautious.start()
        if self.service.parity is not None:
            self.service.parity.start()
        self.consent_watcher.start()
        self.watcher.start()
        for item_surface in self.service.items.values():
            item_surface.holder.start()

    def stop(self) -> None:
        """Stop the threads; the trace writes its queue to disk and sends what Redis takes in decision_log_close_s."""
        self.watcher.stop()
        for item_surface in self.service.items.values():
            item_surface.holder.stop()
        self.service.safe_mode.stop()
        if self.service.cautious is not None:
            self.service.cautious.stop()
        if self.service.parity is not None:
            self.service.parity.stop()
        self.consent_watcher.stop()
        self.service.trace.close(self.settings.decision_log_close_s)
        self.service.breaker.close()
        if self.service.async_client is not None:
            self.service.async_client.close()
        if self.shared_metrics is not None:
            self.shared_metrics.stop()


def build_trace_writer(settings: ServingSettings, metrics: ServiceMetrics) -> TraceWriter:
    """The decision log's writer: its own connection (a longer bound than the decisions': it is off the request
    path) and its write-ahead folder for this Redis destination; its counters exported with the service's metrics."""
    timeout_s = settings.trace_redis_timeout_ms / 1000.0
    # On a Redis Cluster its connection follows the stream's master (a failover: the next connect finds the new one).
    client = slot_client(settings.redis_url, settings.decision_stream, timeout_s)
    trace = TraceWriter(
        client, settings.decision_stream, settings.decision_stream_maxlen,
        destination_dir(settings.wal_root(), settings.redis_url, settings.decision_stream),
        queue_size=settings.trace_queue_size, on_drop=metrics.decision_log_failures.inc,
        sync_interval_s=settings.decision_wal_sync_ms / 1000.0, max_bytes=int(settings.decision_wal_max_mb * 2**20),
        segment_bytes=int(settings.decision_wal_segment_mb * 2**20), ack_poll_s=settings.decision_log_ack_poll_s,
    )
    metrics.watch_decision_log(trace)
    return trace


def build_breaker(settings: ServingSettings, async_client: AsyncRedis, metrics: ServiceMetrics) -> CircuitBreaker:
    """The online store's circuit breaker: while open, a PING on the decisions' connection (within their timeout)
    every breaker_probe_interval_s closes it as soon as Redis answers; its counts exported with the metrics."""
    breaker = CircuitBreaker(
        settings.breaker_failures, settings.breaker_cooldown_s, probe=lambda: async_client.execute([("PING",)]),
        probe_interval_s=settings.breaker_probe_interval_s,
    )
    metrics.watch_breaker(breaker)
    return breaker


def build_runtime(settings: ServingSettings) -> Runtime:
    """Check the API keys (production mode refuses to start without keys or with the default salt), validate the
    policy files, open the stores, load the champions, and wire the service."""
    keys = build_key_ring(settings)  # first: a refused start-up loads nothing
    config = load_policy_config(settings.config_dir, REGIONS)  # a bad file stops start-up here, with its name
    experiments = ExperimentAssigner(load_experiments(settings.experiments_file))
    platform = settings.platform()
    timeout_s = settings.redis_timeout_ms / 1000.0
    store = feature_store(settings.redis_url, platform, redis_timeout_s=timeout_s)
    champions = load_champions(platform.mlflow_uri, config, store)
    # retry=None: redis-py's default retries would hold a decision for seconds when Redis hangs.
    client = redis_client(settings.redis_url, timeout_s)  # a RedisCluster for redis+cluster:// (infra/redis_cluster.py)
    metrics = ServiceMetrics()
    clock = Clock(settings.now)  # the one clock: freshness, caps, budgets, trace, outcomes, events (core/clock.py)
    trace = build_trace_writer(settings, metrics)
    async_client = async_redis(settings.redis_url, timeout_s)  # the decisions' round trips on the event loop
    items: dict[str, ItemSurface] = build_item_surfaces(
        config, store, client, metrics, clock, platform.data_dir, settings.seed
    )
    consent = ConsentStore(client, consent_purposes(config))
    # The pseudonym key the lake and Redis are keyed by: made here in dev mode, never in production (the pipeline
    # makes it, or `python -m infra.keys rotate pseudonym`; a missing key stops start-up with that message).
    pseudonymizer = lake_pseudonymizer(create=settings.mode == "dev")
    # The drift guards' per-surface switch, polled like safe mode (its policy from serving/conf/guards.yaml).
    cautious = CautiousSwitch(client, load_guard_config().cautious, poll_s=settings.safe_mode_poll_s)
    metrics.watch_cautious(cautious)
    parity = ParityCaps(client, poll_s=settings.safe_mode_poll_s)  # fair exposure's caps (training/fairness.py)
    parity.refresh()
    metrics.watch_parity(parity)
    service = DecisionService(
        config, champions, client, trace, experiments,
        SafeMode(client, settings.safe_mode_key, settings.safe_mode, settings.safe_mode_poll_s,
                 settings.safe_mode_path()),
        np.random.default_rng(settings.seed), settings.hash_salt, metrics,
        build_breaker(settings, async_client, metrics),
        LastKnownGood(settings.last_known_good_max_entries, settings.last_known_good_max_age_s),
        clock=clock,
        async_client=async_client,
        items=items,
        consent=consent,
        cautious=cautious,
        parity=parity,
        pseudonymizer=pseudonymizer,
    )
    service.warm_up()  # the first request must not pay for cold caches and overrun its deadline
    metrics.watch_models(lambda: service.champions)  # hyperlift_model_info, read at scrape time
    watcher = ChampionWatcher(service, platform.mlflow_uri, model_keys(config), store, settings.model_refresh_s)
    outcomes = OutcomeLog(
        client, settings.outcome_stream, settings.hash_salt, clock.time, settings.outcome_idempotency_ttl_s
    )
    # The event path has its own connections: a longer timeout than the decisions' (see the setting).
    events_timeout_s = settings.events_redis_timeout_ms / 1000.0
    events_client = redis_client(settings.redis_url, events_timeout_s)
    events_store = feature_store(settings.redis_url, platform, redis_timeout_s=events_timeout_s)
    updater = StreamUpdater(
        OnlineWriter(events_store, events_client), events_client, Lateness(settings.allowed_lateness_days), clock.now,
        pseudonymizer=pseudonymizer,
    )
    events = EventIntake(updater, metrics.registry)
    # Its own connection: XREAD blocks for a second at a time, longer than the decisions' timeout.
    watcher_client = redis_client(settings.redis_url, 5.0, connect_timeout_s=1.0)
    consent_watcher = ConsentWatcher(watcher_client, consent.stream, service.feature_cache.revoke)
    shared = None if settings.metrics_dir is None else SharedExposition(
        settings.metrics_dir, metrics.registry, settings.metrics_publish_s
    )
    runtime = Runtime(
        service, outcomes, events, watcher, Admission(settings.max_in_flight), settings, keys, consent, consent_watcher,
        shared,
    )
    if shared is not None:
        shared.refresh = runtime.refresh_gauges
    return runtime
