"""The decision service: features → eligibility → uplift scores → exploration → logged decision."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from serving.breaker import CircuitBreaker
from serving.decision_log import DecisionLog
from serving.feature_cache import LastKnownGood
from serving.features import FeatureClient, FeatureRead, FeatureStoreUnavailable
from serving.policy import choose, eligible_actions
from serving.schemas import DecisionRequest, DecisionResponse, ModelRef, ScoredAction
from training.pyfunc import UpliftModel
from training.registry import RegisteredModel

log = logging.getLogger(__name__)

# Fallback reasons (documented in README "Decision service"): the service answers with the control action.
COLD_START = "cold_start_unknown_user"
FEATURES_UNAVAILABLE = "feature_store_unavailable"
FEATURES_CIRCUIT_OPEN = "feature_store_circuit_open"
LAST_KNOWN_GOOD = "last_known_good_features"
NO_MODEL = "no_champion_model"


class UnknownCandidates(ValueError):
    """The request named actions that the model does not know."""


@dataclass
class Champion:
    """The loaded champion model and the feature client of its feature service."""

    model: UpliftModel
    ref: RegisteredModel
    features: FeatureClient


@dataclass
class ServiceMetrics:
    """Counters exposed at /metrics."""

    decisions: int = 0
    fallbacks: Counter = field(default_factory=Counter)
    chosen: Counter = field(default_factory=Counter)
    model_swaps: int = 0
    model_refresh_failures: int = 0


class DecisionService:
    """Scores every eligible candidate with the champion and picks one with epsilon-greedy exploration."""

    def __init__(
        self,
        champion: Champion | None,
        decision_log: DecisionLog,
        epsilon: float,
        control: str,
        rng: np.random.Generator,
        breaker: CircuitBreaker | None = None,
        feature_cache: LastKnownGood | None = None,
    ):
        self.champion = champion
        self.breaker = breaker or CircuitBreaker()
        self.feature_cache = feature_cache or LastKnownGood()
        self.decision_log = decision_log
        self.epsilon = epsilon
        self.control = control
        self.rng = rng
        self._rng_lock = threading.Lock()  # numpy Generators are not thread-safe; handlers run in a thread pool
        self.metrics = ServiceMetrics()

    def decide(self, request: DecisionRequest) -> DecisionResponse:
        """Answer one decision request and log it."""
        started = time.perf_counter()
        champion = self.champion
        if champion is not None and request.candidates is not None:
            known = {champion.model.control, *champion.model.treatments}
            unknown = sorted(set(request.candidates) - known)
            if unknown:
                raise UnknownCandidates(f"unknown candidate actions {unknown}; known actions: {sorted(known)}")
        scores, fallback, features = self._scores(request)
        with self._rng_lock:
            choice = choose(scores, 0.0 if fallback else self.epsilon, self.rng)
        response = DecisionResponse(
            decision_id=uuid.uuid4().hex,
            actions=[ScoredAction(action_id=choice.action_id, score=choice.score, propensity=choice.propensity)],
            model=ModelRef(name=champion.ref.name, version=champion.ref.version) if champion else None,
            feature_service=champion.features.feature_service_name if champion else None,
            fallback=fallback,
        )
        self._record(request, response, choice.probabilities, features, time.perf_counter() - started)
        return response

    def _scores(self, request: DecisionRequest) -> tuple[dict[str, float], str | None, dict[str, float | None]]:
        """Expected incremental net value per eligible action, or the control alone with a fallback reason."""
        champion = self.champion
        if champion is None:
            return {self.control: 0.0}, NO_MODEL, {}
        model = champion.model
        read, fallback = self._read_features(champion, request.user_id)
        if read is None:
            return {model.control: 0.0}, fallback, {}
        if not read.found:
            return {model.control: 0.0}, COLD_START, {}
        consent = bool(read.by_name.get("consent_marketing") or 0)
        allowed = eligible_actions([model.control, *model.treatments], model.control, consent, request.candidates)
        uplift = model.uplift(read.values[None, :])[0]
        net = {a: float(u) - model.action_costs.get(a, 0.0) for a, u in zip(model.treatments, uplift)}
        scores = {a: (0.0 if a == model.control else net[a]) for a in allowed}
        if not scores:  # candidates without the control and no consent: the control is always allowed
            scores = {model.control: 0.0}
        return scores, fallback, read.by_name

    def _read_features(self, champion: Champion, user_id: int) -> tuple[FeatureRead | None, str | None]:
        """Online features (fallback None), else the user's last known good ones, else None with the reason."""
        key = (champion.ref.version, user_id)  # the value order belongs to one model version
        if self.breaker.allow():
            try:
                read = champion.features.read(user_id, champion.model.feature_names)
            except FeatureStoreUnavailable as exc:
                self.breaker.record_failure()
                log.warning("user %s: %s", user_id, exc)
                reason = FEATURES_UNAVAILABLE
            else:
                self.breaker.record_success()
                if read.found:
                    self.feature_cache.put(key, read)
                return read, None
        else:  # the online store failed repeatedly: do not wait on it, try again after the cooldown
            reason = FEATURES_CIRCUIT_OPEN
        cached = self.feature_cache.get(key)
        return (cached, LAST_KNOWN_GOOD) if cached is not None else (None, reason)

    def _record(
        self,
        request: DecisionRequest,
        response: DecisionResponse,
        probabilities: dict[str, float],
        features: dict[str, float | None],
        elapsed_s: float,
    ) -> None:
        chosen = response.actions[0]
        self.metrics.decisions += 1
        self.metrics.chosen[chosen.action_id] += 1
        if response.fallback:
            self.metrics.fallbacks[response.fallback] += 1
        self.decision_log.append(
            {
                "decision_id": response.decision_id,
                "ts": time.time(),
                "user_id": request.user_id,
                "surface": request.surface,
                "context": request.context or None,  # None, not {}: parquet cannot store an empty struct
                "action_id": chosen.action_id,
                "score": chosen.score,
                "propensity": chosen.propensity,
                "probabilities": probabilities,
                "model": response.model.model_dump() if response.model else None,
                "feature_service": response.feature_service,
                "features": features or None,
                "fallback": response.fallback,
                "latency_ms": elapsed_s * 1000.0,
            }
        )
