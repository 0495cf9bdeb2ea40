"""Prometheus metrics of the decision service, on a registry of its own (one per app, so tests can build many).

Latency is a histogram per surface and segment (features, scoring, policy, log, total); fallbacks are counted by
reason, exploration by surface, budget spend and refusals by campaign, cap refusals by rule, stale feature reads by
view and policy. With several uvicorn workers each worker exposes its own series (scrape each worker, or sum in
Prometheus).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

# 50 µs … 1 s: the decision path lives around 1 ms, the deadlines around 10–40 ms.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.04, 0.1, 0.25, 1.0
)
SEGMENTS = ("features", "scoring", "policy", "log", "total")


class ServiceMetrics:
    """Every counter, gauge and histogram the service updates, registered on `registry`."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], MetricWrapperBase] = {}
        r = self.registry
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
            "hyperlift_decision_log_failures", "Decision records the trace stream did not take.", registry=r
        )
        self.model_swaps = Counter("hyperlift_model_swaps", "Champion hot swaps.", registry=r)
        self.model_refresh_failures = Counter(
            "hyperlift_model_refresh_failures", "Failed attempts to load a newly aliased model.", registry=r
        )
        self.breaker_state = Gauge(
            "hyperlift_feature_store_breaker_open", "1 while the online-store circuit breaker is open.", registry=r
        )
        self.deadline_breaches = Counter(
            "hyperlift_deadline_breaches", "Segments that overran their deadline.", ["surface", "segment"], registry=r
        )
        self.safe_mode = Gauge("hyperlift_safe_mode", "1 while the global safe mode is on.", registry=r)
        self.stale_reads = Counter(
            "hyperlift_stale_feature_reads",
            "Feature reads whose view row was older than the view's freshness contract (or had values but no "
            "timestamp), by view and the contract's policy (use: scored anyway; fallback: stale_features).",
            ["feature_view", "policy"], registry=r,
        )

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
