"""Prometheus metrics of the decision service, on a registry of its own (one per app, so tests can build many).

Latency is a histogram per surface and segment (features, scoring, policy, log, total); fallbacks are counted by
reason, exploration by surface, budget spend and refusals by campaign, cap refusals by rule, stale feature reads by
view and policy. The decision log's counters (written, sent, spilled, replayed, dropped by reason, pending on disk)
are read from the trace writer at scrape time, as are the online-store breaker's openings, probes and failures (by
whether they counted) and what the HTTP protocol did to slow or surplus clients (refused connections, read timeouts:
process-wide, see ConnectionStats); rate-limit refusals are counted by route family. With several uvicorn workers
and HYPERLIFT_SERVING_METRICS_DIR set, one scrape covers every worker (serving/ops/metrics_shared.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import (
    CollectorRegistry, Counter, Gauge, GCCollector, Histogram, PlatformCollector, ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

# Counters without their `_created` twin series (one per labelled child, doubling the scrape for a timestamp
# nobody graphs).
disable_created_metrics()

# 50 µs … 1 s: the decision path lives around 1 ms, the deadlines around 10–40 ms.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.04, 0.1, 0.25, 1.0
)
SEGMENTS = ("features", "scoring", "policy", "log", "total")


class DecisionLogStats(Protocol):
    """The trace writer's running counters (serving/store/trace.py TraceStats)."""

    written: int
    sent: int
    spilled: int
    replayed: int
    redis_restarts: int
    released_unconfirmed: int


class DecisionLogSource(Protocol):
    """What the decision log's collector reads (serving/store/trace.py TraceWriter)."""

    stats: DecisionLogStats
    pending_records: int
    pending_bytes: int
    unsent_records: int

    def dropped_by_reason(self) -> dict[str, int]: ...


class DecisionLogCollector(Collector):
    """The trace writer's counters, read at scrape time: the writer thread only adds to plain ints, so the log
    costs the decision path nothing for its metrics."""

    def __init__(self, source: DecisionLogSource):
        self.source = source

    def collect(self) -> Iterator[Metric]:
        s, stats = self.source, self.source.stats
        for name, help_text, value in (
            ("written", "Decision records written to the local write-ahead file.", stats.written),
            ("sent", "Decision records Redis confirmed (first sends and resends).", stats.sent),
            ("spilled", "Decision records that could not go to Redis at once and waited on disk.", stats.spilled),
            ("replayed", "Decision records sent from disk: after a Redis failure or restart, a gap the drain "
             "reported, or left by a finished process.", stats.replayed),
            ("redis_restarts", "Redis restarts (run_id changes) the trace writer saw.", stats.redis_restarts),
            ("released_unconfirmed", "Records deleted from disk over the budget after Redis, before the lake, had "
             "them: they rely on Redis's durability (is the drain running?).", stats.released_unconfirmed),
            ("writer_errors", "Unexpected errors the trace writer's thread survived (a bug: see the log; its records "
             "stay on disk and go on the next try).", stats.writer_errors),
        ):
            yield CounterMetricFamily(f"hyperlift_decision_log_{name}", help_text, value=value)
        dropped = CounterMetricFamily(
            "hyperlift_decision_log_dropped", "Decision records that will never reach the log, by reason.",
            labels=["reason"],
        )
        for reason, n in sorted(s.dropped_by_reason().items()):
            dropped.add_metric([reason], n)
        yield dropped
        for name, help_text, value in (
            ("pending_records", "Records on disk the lake has not confirmed yet.", s.pending_records),
            ("pending_bytes", "Bytes of write-ahead segments on disk.", s.pending_bytes),
            ("unsent_records", "Records on disk not yet confirmed by the current Redis server.", s.unsent_records),
        ):
            yield GaugeMetricFamily(f"hyperlift_decision_log_{name}", help_text, value=value)


class CautiousSource(Protocol):
    """The drift guards' per-surface switch (serving/ops/cautious.py CautiousSwitch)."""

    @property
    def surfaces(self) -> list[str]: ...


class BreakerCounts(Protocol):
    """The circuit breaker's running counts (serving/ops/breaker.py CircuitBreaker)."""

    opened: int
    closed_by_probe: int
    probes: dict[str, int]
    failures: dict[str, int]


class BreakerCollector(Collector):
    """The online-store breaker's counts, read at scrape time (its state: hyperlift_feature_store_breaker_open)."""

    def __init__(self, breaker: BreakerCounts):
        self.breaker = breaker

    def collect(self) -> Iterator[Metric]:
        b = self.breaker
        yield CounterMetricFamily(
            "hyperlift_feature_store_breaker_openings", "Times the breaker opened.", value=b.opened
        )
        yield CounterMetricFamily(
            "hyperlift_feature_store_breaker_closed_by_probe", "Times a probe (PING) answered closed the breaker.",
            value=b.closed_by_probe,
        )
        probes = CounterMetricFamily(
            "hyperlift_feature_store_breaker_probes", "Probes sent while the breaker was open, by result.",
            labels=["result"],
        )
        for result, n in sorted(b.probes.items()):
            probes.add_metric([result], n)
        yield probes
        failures = CounterMetricFamily(
            "hyperlift_feature_store_breaker_failures",
            "Failed Redis calls reported to the breaker: counted toward opening it, or not (same_episode: admitted "
            "before the last counted failure; while_open: the breaker was already open).", labels=["kind"],
        )
        for kind, n in sorted(b.failures.items()):
            failures.add_metric([kind], n)
        yield failures


@dataclass
class ConnectionStats:
    """What the HTTP protocol (serving/api/connection_limits.py) did to clients. One per process: uvicorn builds the
    protocol with no app at hand, so it adds to the module's CONNECTION_STATS and every ServiceMetrics exports it."""

    refused: int = 0  # connections closed on arrival: the worker already held max_connections
    timeouts: dict[str, int] = field(default_factory=lambda: {"headers": 0, "body": 0})
    headers_too_large: int = 0


CONNECTION_STATS = ConnectionStats()


class ConnectionCollector(Collector):
    """The process's ConnectionStats, read at scrape time."""

    def __init__(self, stats: ConnectionStats):
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        yield CounterMetricFamily(
            "hyperlift_http_connections_refused", "Connections closed on arrival (503): the worker held "
            "max_connections already.", value=s.refused,
        )
        timeouts = CounterMetricFamily(
            "hyperlift_http_read_timeouts", "Requests whose headers or body did not arrive in time (408, closed).",
            labels=["part"],
        )
        for part, n in sorted(s.timeouts.items()):
            timeouts.add_metric([part], n)
        yield timeouts
        yield CounterMetricFamily(
            "hyperlift_http_headers_too_large", "Requests whose headers passed the size bound (431, closed).",
            value=s.headers_too_large,
        )


class ModelInfoCollector(Collector):
    """`hyperlift_model_info{model, alias, version, feature_service} 1` per loaded model, read at scrape time (a model
    alias not loaded yet has no series: /readyz names it)."""

    def __init__(self, source: Callable[[], dict]):
        self.source = source

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("hyperlift_model_info", "The models this worker serves (value 1).",
                                 labels=["model", "alias", "version", "feature_service"])
        for (name, alias), champion in sorted(self.source().items()):
            if champion is not None:
                info.add_metric([name, alias, str(champion.ref.version), champion.features.feature_service_name], 1)
        yield info


class ServiceMetrics:
    """Every counter, gauge and histogram the service updates, registered on `registry`."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], MetricWrapperBase] = {}
        r = self.registry
        # What operators expect of any process: CPU, memory, file descriptors, start time; the interpreter's version
        # and its garbage collector.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.responses = Counter(
            "hyperlift_http_responses", "HTTP responses by route family (decisions, outcomes, events, consent, admin, "
            "stats, healthz, readyz, metrics, docs, other) and status code.", ["route", "status"], registry=r,
        )
        self.latency = Histogram(
            "hyperlift_decision_segment_seconds", "Time spent per decision segment.", ["surface", "segment"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.decisions = Counter("hyperlift_decisions", "Decisions answered.", ["surface"], registry=r)
        self.fallbacks = Counter("hyperlift_fallbacks", "Decisions answered by a fallback.", ["surface", "reason"], registry=r)
        self.explored = Counter(
            "hyperlift_explored_decisions", "Decisions whose first action is not the greedy one.", ["surface"], registry=r
        )
        self.chosen = Counter("hyperlift_chosen_actions", "Actions served (every slate slot).", ["surface", "action"], registry=r)
        self.budget_spend = Counter("hyperlift_budget_spend", "Currency charged to campaigns.", ["campaign"], registry=r)
        self.budget_refusals = Counter(
            "hyperlift_budget_refusals", "Chosen actions refused because their campaign was out of budget.", ["campaign"],
            registry=r,
        )
        self.cap_refusals = Counter(
            "hyperlift_cap_refusals", "Chosen actions refused by a frequency cap at reservation time.", ["surface"], registry=r
        )
        self.request_errors = Counter(
            "hyperlift_decision_request_errors", "Decision requests answered 500 (a bug; the log has the traceback).",
            registry=r,
        )
        self.redraws = Counter(
            "hyperlift_decision_redraws",
            "Decisions served after a redraw (a reservation conflict): logged with redraws > 0, not randomized as "
            "logged, so off-policy estimates leave them out.", ["surface"], registry=r,
        )
        self.shed = Counter("hyperlift_shed_requests", "Requests answered at once because too many were in flight.", registry=r)
        self.in_flight = Gauge("hyperlift_in_flight_decisions", "Decisions being computed now.", registry=r)
        self.decision_log_failures = Counter(
            "hyperlift_decision_log_failures", "Decision records dropped by the trace (every reason; "
            "hyperlift_decision_log_dropped_total has them by reason).", registry=r
        )
        self.model_swaps = Counter("hyperlift_model_swaps", "Champion hot swaps.", registry=r)
        self.model_refresh_failures = Counter(
            "hyperlift_model_refresh_failures", "Failed attempts to load a newly aliased model.", registry=r
        )
        self.item_index_swaps = Counter(
            "hyperlift_item_index_swaps", "Item index versions swapped in (the first load included).", ["surface"],
            registry=r,
        )
        self.item_index_refresh_failures = Counter(
            "hyperlift_item_index_refresh_failures", "Failed attempts to load a published item index.", ["surface"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "hyperlift_feature_store_breaker_open", "1 while the online-store circuit breaker is open.", registry=r
        )
        self.deadline_breaches = Counter(
            "hyperlift_deadline_breaches", "Segments that overran their deadline.", ["surface", "segment"], registry=r
        )
        self.safe_mode = Gauge("hyperlift_safe_mode", "1 while the global safe mode is on.", registry=r)
        self.rate_limited = Counter(
            "hyperlift_rate_limited_requests", "Requests refused with 429 by the per-client rate limit, by route "
            "family (decisions, outcomes, events, admin, stats, other).", ["route"], registry=r,
        )
        r.register(ConnectionCollector(CONNECTION_STATS))
        self.stale_reads = Counter(
            "hyperlift_stale_feature_reads",
            "Feature reads whose view row was older than the view's freshness contract (or had values but no "
            "timestamp), by view and the contract's policy (use: scored anyway; fallback: stale_features).",
            ["feature_view", "policy"], registry=r,
        )
        self.parity_capped = Counter(
            "hyperlift_parity_capped_decisions", "Decisions a fair-exposure cap answered neutral (fallback parity_cap; "
            "training/fairness.py).", ["surface"], registry=r,
        )
        self.parity_caps = Gauge(
            "hyperlift_parity_caps", "Fair-exposure caps in force (surface × dimension × group), read at scrape time.",
            registry=r,
        )
        self.cautious_decisions = Counter(
            "hyperlift_cautious_decisions", "Decisions made while the surface was cautious (the drift guards' "
            "switch; those answered neutral are also in hyperlift_fallbacks_total{reason=\"cautious_neutral\"}).",
            ["surface"], registry=r,
        )
        self.cautious_surfaces = Gauge(
            "hyperlift_cautious_surfaces", "Surfaces cautious now (serving/ops/cautious.py), read at scrape time.",
            registry=r,
        )

    def watch_parity(self, caps: object) -> None:
        """Export how many fair-exposure caps `caps` (a ParityCaps) holds, read at scrape time."""
        self.parity_caps.set_function(lambda: float(caps.count))  # type: ignore[attr-defined]

    def watch_cautious(self, switch: CautiousSource) -> None:
        """Export how many surfaces `switch` (serving/ops/cautious.py CautiousSwitch) holds cautious, at scrape time."""
        self.cautious_surfaces.set_function(lambda: float(len(switch.surfaces)))

    def watch_models(self, source: Callable[[], dict]) -> None:
        """Export `hyperlift_model_info` from `source()`: {(model name, alias): Champion or None}."""
        self.registry.register(ModelInfoCollector(source))

    def watch_decision_log(self, source: DecisionLogSource) -> None:
        """Export the decision log's counters (hyperlift_decision_log_*) from `source`."""
        self.registry.register(DecisionLogCollector(source))

    def watch_breaker(self, breaker: BreakerCounts) -> None:
        """Export the online-store breaker's counts (hyperlift_feature_store_breaker_*) from `breaker`."""
        self.registry.register(BreakerCollector(breaker))

    def labelled(self, metric: MetricWrapperBase, *values: str) -> MetricWrapperBase:
        """`metric.labels(*values)`, remembered: prometheus_client's `labels` validates, locks and looks the child up
        on every call (~3 µs, about nine per decision). The children are the metric's own, so the series are the
        same; there are as many as the labels have values (surfaces × segments, reasons, actions, campaigns)."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def total(self, name: str, **labels: str) -> float:
        """Sum of the samples called `name` whose labels include `labels`, e.g. total('hyperlift_fallbacks_total',
        reason='safe_mode'); 0 when there are none."""
        return sum(
            sample.value
            for metric in self.registry.collect()
            for sample in metric.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )
