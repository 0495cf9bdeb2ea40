"""The decision service: surface → features → freshness → eligibility → consent → caps → budgets → uplift scores →
uncertainty bonus → exploration → diversified slate → reservations → traced decision.

Every answer is a decision; when the policy cannot be followed the surface's neutral action is served with
probability 1 and `fallback` names why (see FALLBACKS). Redis faults never raise out of `decide`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import redis

from serving.ops.breaker import CircuitBreaker
from serving.ops.cautious import CAUTIOUS_NEUTRAL, CautiousPolicy, CautiousSwitch
from serving.ops.parity import PARITY_CAP, ParityCaps
from serving.core.clock import Clock
from serving.core.config import ClockSettings
from serving.decision.experiments import ExperimentAssigner, arms_by_experiment
from serving.store.consent import ConsentStore
from serving.store.feature_cache import LastKnownGood
from serving.store.features import FeatureClient, FeatureRead, FeatureStoreUnavailable
from serving.decision.identity import context_hash, new_decision_id, user_key
from serving.ops.metrics import ServiceMetrics
from serving.ops.redaction import redis_failure
from serving.policy.budgets import CampaignBudgets
from serving.policy.caps import FrequencyCaps
from serving.policy.consent import consent_allows, consented, mask_features
from serving.policy.eligibility import eligible_actions
from serving.policy.slates import draw_slate
from serving.policy.uncertainty import with_bonus
from serving.store.redis_async import AsyncRedis
from serving.store.round_trip import RoundTrip
from serving.ops.safe_mode import SafeMode
from serving.core.schemas import DecisionRequest, DecisionResponse, ModelRef, ScoredAction
from serving.decision.scoring import scorer, sd_scorer
from serving.decision.surfaces import PolicyConfig, SurfaceConfig
from serving.store.trace import TraceWriter
from feature_repo.pseudonyms import lake_pseudonymizer
from infra.keys import Pseudonymizer
from training.pyfunc import UpliftModel
from training.registry import RegisteredModel

if TYPE_CHECKING:  # items.py builds on this module
    from serving.decision.items import ItemSurface

log = logging.getLogger(__name__)
decisions_log = logging.getLogger("hyperlift.decisions")

# Fallback reasons (README "Decision service"): the surface's neutral action is served with probability 1.
SAFE_MODE = "safe_mode"
OVERLOADED = "overloaded"
NO_MODEL = "no_champion_model"
COLD_START = "cold_start_unknown_user"
FEATURES_UNAVAILABLE = "feature_store_unavailable"
FEATURES_CIRCUIT_OPEN = "feature_store_circuit_open"
FEATURES_LATE = "features_deadline_exceeded"
STALE_FEATURES = "stale_features"  # a view older than its freshness contract, whose policy is "fallback"
DEADLINE = "deadline_exceeded"
POLICY_STORE_UNAVAILABLE = "policy_store_unavailable"
RESERVATION_CONFLICT = "reservation_conflict"
# Not neutral: the policy ran on the user's cached features because the online store failed.
LAST_KNOWN_GOOD = "last_known_good_features"
# Item surfaces (serving/decision/items.py): no index loaded yet, or a user without a vector (neutral action) ...
ITEM_INDEX_MISSING = "item_index_missing"
NO_USER_VECTOR = "no_user_vector"
# ... and not neutral: the most popular items, served because the user has no vector.
POPULAR_ITEMS = "popular_items_no_user_vector"
FALLBACKS = (
    SAFE_MODE, OVERLOADED, NO_MODEL, COLD_START, FEATURES_UNAVAILABLE, FEATURES_CIRCUIT_OPEN, FEATURES_LATE,
    STALE_FEATURES, DEADLINE, POLICY_STORE_UNAVAILABLE, RESERVATION_CONFLICT, LAST_KNOWN_GOOD,
    ITEM_INDEX_MISSING, NO_USER_VECTOR, POPULAR_ITEMS,
    CAUTIOUS_NEUTRAL,  # the drift guards' cautious switch answered neutral (serving/ops/cautious.py)
    PARITY_CAP,  # a fair-exposure cap answered this user's group neutral (serving/ops/parity.py)
)
# The decision record's format (serving/store/decision_log.py: DECISION_FORMAT documents every field). 2: features
# as read, per-slot distributions, positions, redraws and masked features; records without the field are version 1.
RECORD_VERSION = 2
SINGLE_SLOT_REDRAWS = 3  # a chosen action refused at reservation (a concurrent request took the last slot): redraw


T = TypeVar("T")
# A step of the decision that may need Redis: it yields (round trip, raise_on_error), is sent the replies (or thrown
# the RedisError) and returns its result; DecisionService.decide and decide_async carry the round trips out.
Steps = Generator[tuple[RoundTrip, bool], list, T]


TripOutcome = tuple[list | None, Exception | None]  # a round trip's replies, or the RedisError it raised


def _resume(steps: Steps[T], outcome: TripOutcome | None) -> tuple[bool, object]:
    """Advance `steps` with the last round trip's outcome (None to start): (True, the next round trip) or (False,
    the steps' result). The one rule both drivers follow: replies are sent in, a RedisError is thrown in."""
    try:
        if outcome is None:
            return True, next(steps)
        replies, error = outcome
        return True, steps.throw(error) if error is not None else steps.send(replies)
    except StopIteration as done:
        return False, done.value


def run_steps(steps: Steps[T]) -> T:
    """Carry out `steps`, each round trip through its own (sync) client."""
    outcome: TripOutcome | None = None
    while True:
        running, value = _resume(steps, outcome)
        if not running:
            return value  # type: ignore[return-value]
        pipe, raise_on_error = value  # type: ignore[misc]
        try:
            outcome = pipe.execute(raise_on_error), None
        except redis.exceptions.RedisError as exc:
            outcome = None, exc


async def run_steps_async(steps: Steps[T], client: AsyncRedis) -> T:
    """`run_steps` on the running event loop, every round trip through `client`."""
    outcome: TripOutcome | None = None
    while True:
        running, value = _resume(steps, outcome)
        if not running:
            return value  # type: ignore[return-value]
        pipe, raise_on_error = value  # type: ignore[misc]
        try:
            outcome = await client.execute(pipe.command_stack, raise_on_error), None
        except redis.exceptions.RedisError as exc:
            outcome = None, exc


def _argmax(scores: list) -> int:
    """Position of the first highest score (as np.argmax, without turning the list into an array)."""
    return max(range(len(scores)), key=scores.__getitem__)


def _logged_features(read: FeatureRead | None) -> dict[str, dict] | None:
    """The read as the decision record logs it: per feature view, the row's event time and its values as read."""
    if read is None:
        return None
    stamps = read.event_timestamps
    return {view: {"event_ts": stamps.get(view), "values": values} for view, values in read.by_view.items()}


class UnknownSurface(LookupError):
    """The request named a surface that no configuration file defines."""


class BadCandidates(ValueError):
    """The request's candidates do not fit the surface or the model."""


@dataclass(frozen=True)
class ViewFreshness:
    """One feature view's freshness contract (feature_repo/freshness.py), laid out for the request path."""

    name: str  # the view's name in the Feast registry (the metric label)
    key: str  # its key in FeatureRead.event_timestamps (the name Feast's online store keys it by)
    features: tuple[str, ...]  # its features in the read: a view with none of them has no row for the user
    max_staleness: timedelta
    on_stale: str  # "use" or "fallback"


@dataclass
class Champion:
    """A loaded model, the feature client of the feature service it was trained with, and that service's views'
    freshness contracts. `score` is the model's uplift function: its trees compiled (serving/decision/scoring.py), or
    XGBoost's path for learners the compiler does not support; `spread` its per-user uncertainty σ (the same), None
    when the model has no uncertainty model."""

    model: UpliftModel
    ref: RegisteredModel
    features: FeatureClient
    freshness: tuple[ViewFreshness, ...]
    score: Callable[[np.ndarray], np.ndarray] | None = None
    spread: Callable[[np.ndarray], np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.score is None:
            self.score = scorer(self.model)
        if self.spread is None:
            self.spread = sd_scorer(self.model)
        self._lookups: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def net_uplift(
        self, actions: list[str], uplift: np.ndarray, sd: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(μ, s) of `actions` from the model's uplift row (treatments order): μ = uplift − the action's cost, 0 for
        the control and for actions the model has no uplift for; s = this user's σ of the uplift from `sd` (the
        `spread` row, treatments order) when given, else the uplift's holdout standard error; 0 for the control and
        unknown actions. The per-action lookups are kept per action list (a surface's candidates give a handful)."""
        key = tuple(actions)
        lookup = self._lookups.get(key)
        if lookup is None:
            model = self.model
            position = {a: i + 1 for i, a in enumerate(model.treatments)}  # 0: no uplift
            index = np.array([position.get(a, 0) for a in actions], np.int64)
            cost = np.array([model.action_costs.get(a, 0.0) for a in actions])
            control = np.array([a == model.control for a in actions])
            se = np.array([float(getattr(model, "uplift_se", {}).get(a, 0.0)) for a in actions])
            for kept in (index, cost, control, se):
                kept.flags.writeable = False  # shared by every decision on this list: never changed in place
            if len(self._lookups) >= 4096:  # bounded: candidates narrowed per request could vary without end
                self._lookups.clear()
            lookup = self._lookups[key] = (index, cost, control, se)
        index, cost, control, se = lookup
        mu = np.concatenate(([0.0], np.asarray(uplift, np.float64)))[index] - cost
        mu[control] = 0.0
        if sd is not None:
            se = np.concatenate(([0.0], np.asarray(sd, np.float64)))[index]
            se[control] = 0.0
        return mu, se


@dataclass
class Surface:
    """A surface's configuration with its Redis-backed caps and budgets."""

    config: SurfaceConfig
    caps: FrequencyCaps
    budgets: CampaignBudgets
    groups: dict[str, int]  # action → diversity group index

    def attributes(self, actions: list[str]) -> np.ndarray:
        """One-hot diversity group of each action (a zero row for actions in no group)."""
        out = np.zeros((len(actions), max(len(self.config.diversity.groups), 1)))
        for i, action in enumerate(actions):
            if action in self.groups:
                out[i, self.groups[action]] = 1.0
        return out


@dataclass
class Outcome:
    """What the policy pipeline settled on."""

    actions: list[str]
    scores: list[float]
    propensities: list[float]
    candidates: list[str]
    candidate_scores: list[float | None]
    probabilities: list[float]
    fallback: str | None
    region: str | None
    champion: Champion | None
    slot_probabilities: list[list[float]] | None = None  # per slot, over `candidates`; None: [probabilities]
    redraws: int = 0  # reservation conflicts before this slate was kept (> 0: the probabilities are conditional)
    read: FeatureRead | None = None  # the features the policy read (logged with the decision)
    masked: list[str] = field(default_factory=list)  # features the consent rules hid from the model (scored as NaN)
    model: tuple[str, str] | None = None  # (name, version) when no champion ranked: item surfaces' index version
    feature_service: str | None = None  # the feature service read when no champion did


class DecisionService:
    """Answers decision requests for every configured surface; thread-safe."""

    def __init__(
        self,
        config: PolicyConfig,
        champions: dict[tuple[str, str], Champion | None],
        client: redis.Redis,
        trace: TraceWriter,
        experiments: ExperimentAssigner,
        safe_mode: SafeMode,
        rng: np.random.Generator,
        salt: str,
        metrics: ServiceMetrics | None = None,
        breaker: CircuitBreaker | None = None,
        feature_cache: LastKnownGood | None = None,
        clock: Clock | None = None,
        async_client: AsyncRedis | None = None,
        items: dict[str, ItemSurface] | None = None,
        consent: ConsentStore | None = None,
        cautious: CautiousSwitch | None = None,
        parity: ParityCaps | None = None,
        pseudonymizer: Pseudonymizer | None = None,
    ):
        self.config = config
        # The request's raw user id → the user's pseudonym, once, at the edge: features, tiles, consent and the
        # item history are keyed by it, as in the lake (feature_repo/pseudonyms.py); `user_key` (the trace salt's
        # hash of the raw id) keys the decision log, caps and experiment arms.
        self.pseudonymizer = pseudonymizer or lake_pseudonymizer()
        self.items = items or {}  # ann_items surfaces by name (serving/decision/items.py)
        self.champions = champions
        self.client = client
        self.async_client = async_client  # decide_async's round trips (the same server as `client`)
        self.trace = trace
        self.experiments = experiments
        self.safe_mode = safe_mode
        self.rng = rng
        self.salt = salt
        self.metrics = metrics or ServiceMetrics()
        self.breaker = breaker or CircuitBreaker()
        self.feature_cache = feature_cache or LastKnownGood()
        self.consent = consent  # consent events (serving/store/consent.py), read in the features' round trip
        self.cautious = cautious  # the drift guards' per-surface switch (serving/ops/cautious.py): a dict lookup
        self.parity = parity  # fair exposure's caps per surface and group (serving/ops/parity.py): a dict lookup
        # The one clock (serving/core/clock.py): freshness, caps, budget pacing and the trace's ts all read it.
        self.clock = clock if clock is not None else Clock(ClockSettings().now)
        self._rng_lock = threading.Lock()  # numpy Generators are not thread-safe; sync `decide` may run in threads
        self._scoring_ewma_s: dict[str, float] = {}
        self._no_context_hash = context_hash(None, salt)  # most requests send no context: hash it once
        self.surfaces = {
            name: Surface(
                config=surface,
                caps=FrequencyCaps(
                    client, [c.build() for c in surface.caps], surface.neutral_action, clock=self.clock.time
                ),
                budgets=CampaignBudgets(client, [b.build() for b in surface.budgets], clock=self.clock.time),
                groups={a: i for i, actions in enumerate(surface.diversity.groups.values()) for a in actions},
            )
            for name, surface in config.surfaces.items()
        }

    # ------------------------------------------------------------------ entry points
    def decide(self, request: DecisionRequest) -> DecisionResponse:
        """Answer one decision request and trace it; its Redis round trips go through the sync client (blocking)."""
        return run_steps(self._decision(request))

    async def decide_async(self, request: DecisionRequest) -> DecisionResponse:
        """`decide` on the running event loop: the same steps, the round trips through `async_client`."""
        if self.async_client is None:
            raise RuntimeError("this DecisionService has no async client; build it with async_client=AsyncRedis(...)")
        return await run_steps_async(self._decision(request), self.async_client)

    def _decision(self, request: DecisionRequest) -> Steps[DecisionResponse]:
        """The decision as steps: it yields each Redis round trip (with whether error replies raise) and is sent
        the replies, or thrown the RedisError; `decide` and `decide_async` only carry the round trips out."""
        started = time.perf_counter()
        item_surface = self.items.get(request.surface)
        surface = item_surface if item_surface is not None else self._surface(request.surface)
        config = surface.config
        ukey = user_key(request.user_id, self.salt)
        assignments = self.experiments.assign(ukey, config.name)
        overrides = {k: v for a in assignments for k, v in a.overrides.model_dump(exclude_defaults=True).items()}
        champion = None if item_surface is not None else self.champions.get((config.model.name, config.model.alias))
        timings: dict[str, float] = {}
        caution = self.cautious.policy_for(config.name) if self.cautious is not None else None
        if caution is not None:  # exploration lowered, bonus off (docs/guards.md)
            overrides = caution.overrides(overrides, config.exploration.epsilon, config.exploration.temperature)
            self.metrics.labelled(self.metrics.cautious_decisions, config.name).inc()
        if self.safe_mode.enabled:
            outcome = self._neutral(config, SAFE_MODE, champion)
        elif caution is not None and self._cautious_neutral(caution):
            outcome = self._neutral(config, CAUTIOUS_NEUTRAL, champion)
        elif item_surface is not None:
            if request.candidates is not None:
                raise BadCandidates(f"surface {config.name!r} takes its candidates from the item index; send none")
            outcome = self._neutral(config, None, None) if overrides.get("holdout") else (
                yield from item_surface.decide(self, request, ukey, overrides, timings, started))
        elif champion is None:
            outcome = self._neutral(config, NO_MODEL, None)
        elif overrides.get("holdout"):
            outcome = self._neutral(config, None, champion)
        else:
            self._check_candidates(request, config, champion)
            outcome = yield from self._policy(request, surface, champion, ukey, overrides, timings, started)
        return self._respond(request, surface, ukey, assignments, outcome, timings, started)

    def _uniform(self) -> float:
        """One uniform draw from the service's generator."""
        with self._rng_lock:
            return float(self.rng.random())

    def _cautious_neutral(self, caution: CautiousPolicy) -> bool:
        """Whether this decision is one of the cautious surface's neutral share (one uniform draw)."""
        with self._rng_lock:
            return bool(self.rng.random() < caution.neutral_share)

    def shed(self, request: DecisionRequest) -> DecisionResponse:
        """The answer when admission control refuses a request: the neutral action, traced, no Redis read."""
        started = time.perf_counter()
        item_surface = self.items.get(request.surface)
        surface = item_surface if item_surface is not None else self._surface(request.surface)
        self.metrics.shed.inc()
        champion = None if item_surface else self.champions.get((surface.config.model.name, surface.config.model.alias))
        outcome = self._neutral(surface.config, OVERLOADED, champion)
        ukey = user_key(request.user_id, self.salt)
        assignments = self.experiments.assign(ukey, surface.config.name)  # the arm still counts in the readout
        return self._respond(request, surface, ukey, assignments, outcome, {}, started)

    def warm_up(self) -> None:
        """Load the Lua scripts, then one feature read and one scoring per champion, so that the first request does
        not pay for cold caches (scripts, Redis connections, XGBoost's first call) and overrun its deadline."""
        try:
            for surface in self.surfaces.values():
                surface.caps.load_scripts()
                surface.budgets.load_scripts()
            for item_surface in self.items.values():
                item_surface.caps.load_scripts()
        except redis.exceptions.RedisError as exc:
            log.warning("warm-up could not load the Lua scripts (they load on first use): %s", redis_failure(exc))
        for key, champion in self.champions.items():
            if champion is None:
                continue
            try:
                read = champion.features.read(0, champion.model.feature_names)
                champion.score(read.values[None, :])
            except FeatureStoreUnavailable as exc:
                log.warning("warm-up of %s@%s could not read features: %s", *key, exc)

    # ------------------------------------------------------------------ the pipeline
    def _policy(
        self, request: DecisionRequest, surface: Surface, champion: Champion, ukey: str, overrides: dict,
        timings: dict[str, float], started: float,
    ) -> Steps[Outcome]:
        config = surface.config
        model = champion.model
        candidates = self._candidates(request, config, model)
        read, ruled_out, fallback = yield from self._read(
            champion, surface, self.pseudonymizer(request.user_id), ukey, candidates
        )
        timings["features"] = time.perf_counter() - started
        if read is None:
            return self._neutral(config, fallback, champion)
        outcome = yield from self._on_features(
            request, surface, champion, ukey, overrides, timings, started, candidates, read, ruled_out, fallback
        )
        outcome.read = read  # every decision made on a read logs it, fallbacks included (why was it stale?)
        return outcome

    def _on_features(
        self, request: DecisionRequest, surface: Surface, champion: Champion, ukey: str, overrides: dict,
        timings: dict[str, float], started: float, candidates: list[str], read: FeatureRead,
        ruled_out: set[str] | None, fallback: str | None,
    ) -> Steps[Outcome]:
        """The policy once the user's features are read: freshness, rules, scores, the draw and the reservation."""
        config = surface.config
        model = champion.model
        if not read.found:
            return self._neutral(config, COLD_START, champion)
        if self._stale(champion, read):
            return self._neutral(config, STALE_FEATURES, champion)
        if timings["features"] * 1000.0 > config.deadlines.features_ms:
            self.metrics.deadline_breaches.labels(config.name, "features").inc()
            return self._neutral(config, FEATURES_LATE, champion)

        policy_started = time.perf_counter()
        # The user's bundle comes from the profile; a region the request names may only add its rules (stricter).
        # Consent comes from the read alone: the later of the profile row and the user's consent events.
        region = self.config.region_of(read.by_name.get("region_code"))
        if self.parity is not None:  # drawn before the policy chooses, so capped decisions are a random sample
            keep = self.parity.keep_for(config.name, read.by_name)
            if keep < 1.0 and self._uniform() >= keep:
                self.metrics.labelled(self.metrics.parity_capped, config.name).inc()
                return self._neutral(config, PARITY_CAP, champion, region)
        rules = self.config.rules_for(region, (request.context or {}).get("region"))
        has_consent = all(consented(read.by_name.get(feature)) for feature in rules.consent_features)
        allowed = eligible_actions(candidates, config.neutral_action, rules.allowed_actions, rules.blocked_actions)
        allowed = consent_allows(
            allowed, config.neutral_action, has_consent, rules.consent_for_all_actions, rules.consent_actions
        )
        if allowed == [config.neutral_action]:
            return self._only(config.neutral_action, candidates, fallback, region, champion)
        if ruled_out is None:  # cached features, but the cap and budget counters could not be read
            if config.caps or config.budgets:
                return self._neutral(config, POLICY_STORE_UNAVAILABLE, champion, region)
            ruled_out = set()
        allowed = [a for a in allowed if a not in ruled_out or a == config.neutral_action]
        timings["policy"] = time.perf_counter() - policy_started
        if allowed == [config.neutral_action]:
            return self._only(config.neutral_action, candidates, fallback, region, champion)

        elapsed_ms = (time.perf_counter() - started) * 1000.0
        expected_scoring_ms = self._scoring_ewma_s.get(config.name, 0.0) * 1000.0
        if elapsed_ms + expected_scoring_ms > config.deadlines.total_ms:
            self.metrics.deadline_breaches.labels(config.name, "total").inc()
            return self._neutral(config, DEADLINE, champion, region)
        scoring_started = time.perf_counter()
        masked = [] if has_consent else [f for f in rules.masked_features if f in model.feature_names]
        values = mask_features(read.values, [model.feature_names.index(f) for f in masked], has_consent)
        sd = champion.spread(values[None, :])[0] if champion.spread is not None else None
        mu, se = champion.net_uplift(allowed, champion.score(values[None, :])[0], sd)
        scores = with_bonus(mu, se, overrides.get("uncertainty_bonus", config.uncertainty_bonus))
        timings["scoring"] = scoring = time.perf_counter() - scoring_started
        self._scoring_ewma_s[config.name] = 0.9 * self._scoring_ewma_s.get(config.name, scoring) + 0.1 * scoring
        if scoring * 1000.0 > config.deadlines.scoring_ms:
            self.metrics.deadline_breaches.labels(config.name, "scoring").inc()

        policy_started = time.perf_counter()
        outcome = yield from self._draw_and_reserve(
            surface, ukey, allowed, scores, se, overrides, fallback, region, champion
        )
        outcome.masked = masked
        timings["policy"] += time.perf_counter() - policy_started
        return outcome

    def _draw_and_reserve(
        self, surface: Surface, ukey: str, allowed: list[str], scores: np.ndarray, spreads: np.ndarray,
        overrides: dict, fallback: str | None, region: str | None, champion: Champion,
    ) -> Steps[Outcome]:
        """Draw a slate, then reserve its caps and budgets in one round trip (see README: reservation conflicts).

        A single-slot draw refused at reservation is redrawn without the refused action. The redraw's probabilities
        are conditional on the refusal, which depended on concurrent requests, so its marginal probability is
        unknown: the decision is logged with `redraws` > 0 (the marker that it was not randomized as logged; every
        estimator input leaves it out: training.logged_training, training.ope.bandit_feedback_from_decisions) and
        counted in hyperlift_decision_redraws_total."""
        config = surface.config
        exploration = config.exploration.build(overrides.get("epsilon"))
        if "temperature" in overrides:  # a cautious surface's lowered temperature (serving/ops/cautious.py)
            exploration = dataclasses.replace(exploration, temperature=overrides["temperature"])
        penalty = overrides.get("diversity_penalty", config.diversity.penalty)
        pool, pool_scores, pool_spreads = list(allowed), scores, spreads
        for redraws in range(SINGLE_SLOT_REDRAWS):
            with self._rng_lock:
                slate = draw_slate(pool_scores, surface.attributes(pool), config.slate_size, penalty, exploration,
                                   self.rng, pool_spreads)
            actions = [pool[i] for i in slate.indices]
            if config.neutral_action in actions:  # nothing beats showing nothing: the slate stops there
                actions = actions[: actions.index(config.neutral_action) + 1]
            try:
                kept = yield from self._reserve(surface, ukey, actions)
            except redis.exceptions.RedisError as exc:
                self.breaker.record_failure()
                log.warning("reservation on surface %s failed: %s", config.name, redis_failure(exc))
                return self._neutral(config, POLICY_STORE_UNAVAILABLE, champion, region)
            if kept:
                if redraws:
                    self.metrics.redraws.labels(config.name).inc()
                return Outcome(
                    actions[:kept], slate.adjusted_scores[:kept], slate.probabilities[:kept], pool,
                    np.asarray(pool_scores, np.float64).tolist(), slate.first_slot, fallback, region, champion,
                    slate.slot_distributions[:kept], redraws,
                )
            refused = [i for i, a in enumerate(pool) if a != actions[0]]  # a concurrent request took the last slot
            pool, pool_scores, pool_spreads = [pool[i] for i in refused], pool_scores[refused], pool_spreads[refused]
        return self._neutral(config, RESERVATION_CONFLICT, champion, region)

    def _reserve(self, surface: Surface, ukey: str, actions: list[str]) -> Steps[int]:
        """Reserve a cap slot and charge the budget of every slate action in one pipelined round trip; returns how
        many leading actions are kept (the slate ends at the first refusal; later grants are handed back, in one
        more round trip)."""
        pipe = RoundTrip(self.client)
        tokens = [uuid.uuid4().hex for _ in actions]
        steps = [
            (surface.caps.queue_reserve(pipe, ukey, action, token), surface.budgets.queue_spend(pipe, action))
            for action, token in zip(actions, tokens)
        ]
        replies = (yield pipe, False) if pipe.command_stack else []
        undo = RoundTrip(self.client)
        kept = len(actions)
        for slot, (action, token, (capped, charged)) in enumerate(zip(actions, tokens, steps)):
            reserved, paid = capped(replies), charged(replies)
            if slot < kept and reserved and paid:
                self._count_spend(surface, action)
                continue
            kept = min(kept, slot)
            if reserved:
                surface.caps.queue_release(undo, ukey, action, token)
            if paid.charged:  # all of it, or part (a campaign on another slot refused): serving/policy/budgets.py
                surface.budgets.queue_refund(undo, action, charge=paid)
            if not reserved:
                self.metrics.cap_refusals.labels(surface.config.name).inc()
            elif not paid:
                for budget in surface.budgets.campaigns_of(action):
                    self.metrics.budget_refusals.labels(budget.campaign).inc()
        if undo.command_stack:
            yield undo, True
        return kept

    def _count_spend(self, surface: Surface, action: str) -> None:
        for budget in surface.budgets.campaigns_of(action):
            self.metrics.budget_spend.labels(budget.campaign).inc(budget.costs.get(action, 0.0))

    def _read(
        self, champion: Champion, surface: Surface, user_id: int, ukey: str, actions: list[str]
    ) -> Steps[tuple[FeatureRead | None, set[str] | None, str | None]]:
        """One round trip for the features of `user_id` (the pseudonym: the stores' id) and the surface's cap and
        budget counters: (features, actions ruled out by caps or budgets, fallback). When Redis fails: the user's last known good features, counters
        unknown (None), and the reason; or no features at all."""
        key = (champion.ref.version, user_id)  # the value order belongs to one model version
        if self.breaker.allow():
            pipe = RoundTrip(self.client)
            order = champion.model.feature_names
            features = champion.features.queue(pipe, user_id, order)
            consent = self.consent.queue(pipe, user_id, order) if self.consent is not None else None
            capped = surface.caps.queue_blocked(pipe, ukey, actions)
            exhausted = surface.budgets.queue_exhausted(pipe, actions)
            try:
                replies = yield pipe, True
            except redis.exceptions.RedisError as exc:
                self.breaker.record_failure()
                log.warning("user %s: online store read failed: %s", ukey, redis_failure(exc))  # keyed, not raw
                reason = FEATURES_UNAVAILABLE
            else:
                self.breaker.record_success()
                read = features(replies)
                if consent is not None:
                    read = consent(replies, read)  # the later of the consent event and the profile row
                if read.found:
                    self.feature_cache.put(key, read)
                return read, capped(replies) | exhausted(replies), None
        else:  # Redis failed repeatedly: do not wait on it, try again after the cooldown
            reason = FEATURES_CIRCUIT_OPEN
        # (a revocation after the cached read dropped the user's entries: LastKnownGood.revoke, ConsentWatcher)
        cached = self.feature_cache.get(key) if surface.config.use_last_known_good else None
        return (cached, None, LAST_KNOWN_GOOD) if cached is not None else (None, None, reason)

    def _stale(self, champion: Champion, read: FeatureRead) -> bool:
        """Count every view of `read` older than its contract allows (or with values but no timestamp); True when
        one of them says to fall back. A view with no row for the user is not stale: its values are just missing."""
        now = self.clock.now()
        fall_back = False
        for view in champion.freshness:
            stamp = read.event_timestamps.get(view.key)
            if stamp is None:
                if all(read.by_name.get(name) is None for name in view.features):
                    continue
            elif now - stamp <= view.max_staleness:
                continue
            self.metrics.stale_reads.labels(view.name, view.on_stale).inc()
            fall_back = fall_back or view.on_stale == "fallback"
        return fall_back

    def freshness_contracts(self) -> dict[str, ViewFreshness]:
        """The freshness contract of every feature view the loaded champions read, by view name."""
        return {view.name: view for c in self.champions.values() if c is not None for view in c.freshness}

    # ------------------------------------------------------------------ helpers
    def _surface(self, name: str) -> Surface:
        surface = self.surfaces.get(name)
        if surface is None:
            known = sorted([*self.surfaces, *self.items])
            raise UnknownSurface(f"unknown surface {name!r}; configured surfaces: {known}")
        return surface

    @staticmethod
    def _candidates(request: DecisionRequest, config: SurfaceConfig, model: UpliftModel) -> list[str]:
        """The surface's candidate source narrowed by the request's candidates, neutral first."""
        source = config.candidates.actions or [model.control, *model.treatments]
        if request.candidates is not None:
            wanted = set(request.candidates)
            source = [a for a in source if a in wanted]
        return [config.neutral_action, *(a for a in source if a != config.neutral_action)]

    @staticmethod
    def _check_candidates(request: DecisionRequest, config: SurfaceConfig, champion: Champion) -> None:
        if request.candidates is None:
            if config.candidates.source == "request":
                raise BadCandidates(f"surface {config.name!r} takes its candidates from the request; send `candidates`")
            return
        known = {champion.model.control, *champion.model.treatments}
        unknown = sorted(set(request.candidates) - known)
        if unknown:
            raise BadCandidates(f"unknown candidate actions {unknown}; known actions: {sorted(known)}")
        outside = sorted(set(request.candidates) - set(config.candidates.actions or known))
        if outside:
            raise BadCandidates(f"candidates {outside} are not offered on surface {config.name!r}")

    @staticmethod
    def _neutral(config: SurfaceConfig, reason: str | None, champion: Champion | None, region: str | None = None) -> Outcome:
        return Outcome([config.neutral_action], [0.0], [1.0], [config.neutral_action], [0.0], [1.0], reason, region, champion)

    @staticmethod
    def _only(action: str, candidates: list[str], fallback: str | None, region: str | None, champion: Champion) -> Outcome:
        """Only one action survived the rules: it is served with probability 1 (unscored)."""
        return Outcome([action], [0.0], [1.0], candidates, [None] * len(candidates),
                       [1.0 if a == action else 0.0 for a in candidates], fallback, region, champion)

    def _respond(
        self, request: DecisionRequest, surface: Surface, ukey: str, assignments: list, outcome: Outcome,
        timings: dict[str, float], started: float,
    ) -> DecisionResponse:
        config = surface.config
        champion = outcome.champion
        experiments = arms_by_experiment(assignments)
        response = DecisionResponse(
            decision_id=new_decision_id(self.salt),
            surface=config.name,
            actions=[ScoredAction(action_id=a, score=s, propensity=p)
                     for a, s, p in zip(outcome.actions, outcome.scores, outcome.propensities)],
            slate_propensity=math.prod(outcome.propensities),
            model=ModelRef(name=champion.ref.name, version=champion.ref.version) if champion else (
                ModelRef(name=outcome.model[0], version=outcome.model[1]) if outcome.model else None),
            feature_service=champion.features.feature_service_name if champion else outcome.feature_service,
            policy_version=self.config.policy_version(config.name),
            experiments=experiments,
            fallback=outcome.fallback,
            redrawn=outcome.redraws > 0,
        )
        log_started = time.perf_counter()
        timings["total"] = log_started - started  # the decision itself; the trace hand-off is the "log" segment
        self.trace.append({
            "record_version": RECORD_VERSION,
            "decision_id": response.decision_id,
            "ts": self.clock.time(),
            "surface": config.name,
            "region": outcome.region or "",
            "policy_version": response.policy_version,
            "user_key": ukey,
            "context_hash": context_hash(request.context, self.salt) if request.context else self._no_context_hash,
            "candidates": outcome.candidates,
            "scores": outcome.candidate_scores,
            "probabilities": outcome.probabilities,
            "chosen": outcome.actions,
            "chosen_probabilities": outcome.propensities,
            "positions": list(range(len(outcome.actions))),
            "slot_probabilities": outcome.slot_probabilities or [outcome.probabilities],
            "redraws": outcome.redraws,
            "features": _logged_features(outcome.read),
            "masked_features": outcome.masked,
            "model_name": response.model.name if response.model else None,
            "model_version": response.model.version if response.model else None,
            "feature_service": response.feature_service,
            "experiments": experiments,
            "fallback": outcome.fallback,
            "latency_ms": {k: round(v * 1000.0, 4) for k, v in timings.items()},
        })
        timings["log"] = time.perf_counter() - log_started
        self._count(config.name, outcome, timings)
        decisions_log.info(
            "decision", extra={"decision_id": response.decision_id, "surface": config.name,
                               "actions": outcome.actions, "fallback": outcome.fallback,
                               "latency_ms": round(timings["total"] * 1000.0, 3)},
        )
        return response

    def _count(self, surface: str, outcome: Outcome, timings: dict[str, float]) -> None:
        m = self.metrics
        child = m.labelled
        child(m.decisions, surface).inc()
        for segment, seconds in timings.items():
            child(m.latency, surface, segment).observe(seconds)
        if outcome.fallback:
            child(m.fallbacks, surface, outcome.fallback).inc()
        items = self.items.get(surface)  # items share one series: a label per item would grow with the catalogue
        for action in outcome.actions:
            child(m.chosen, surface, "item" if items and action != items.config.neutral_action else action).inc()
        scores = outcome.candidate_scores
        if sum(s is not None for s in scores) > 1 and outcome.actions[0] != outcome.candidates[_argmax(scores)]:
            child(m.explored, surface).inc()
