"""Item recommendations: candidates from the ANN index over item vectors, ranked by inner product, drawn as a slate.

One decision on an `ann_items` surface:

1. one Redis round trip: the user's vector (feature service `candidates_v1`, `user_embedding_fv`), the profile's
   region and consent features (`ann.profile_service`), the user's consent events, and the per-item cap windows
   (serving/decision/item_caps.py);
2. the k items of highest inner product x_uᵀy_i from the HNSW index (the version `ItemIndexHolder.served` holds at
   the start of the decision; its version is logged as `model_version`, model `item_index`);
3. eligibility after retrieval: the user's region bundle (made stricter by a region the request names) and consent
   apply to items as to every action (`item:<id>` in allowed/blocked lists; a user without the consent the bundle
   requires gets the neutral action), then items the surface excludes and items at a per-item cap are dropped, so
   a surface may get fewer than k candidates; with `rank_top` only the best `rank_top` of those go on (k is then headroom for
   the exclusions and caps, and the decision record, which holds every slot's distribution over the candidates,
   stays small);
4. ranking: the score of an item is its inner product, the quantity the embeddings were fitted to (a preference),
   and the slate is drawn slot by slot by the surface's exploration (serving/policy/slates.py) over those scores,
   so the per-slot probabilities logged are exactly the ones the slate was drawn with (off-policy evaluation of
   another ranking over the same candidates stays valid);
5. the slate's items are reserved against the per-item caps in one atomic script (the slate stops at the first
   refusal), and the decision is logged like every other: candidates, scores, per-slot distributions, positions.

A user with no vector (unknown to the embeddings, or NaN) gets the surface's `slate_size` most popular eligible
items, greedily (probability 1 per slot), with fallback `popular_items_no_user_vector`; without popularity in the
index (or with `popular_fallback: false`) the neutral action, fallback `no_user_vector`. Both are counted in
`hyperlift_fallbacks_total`. Until an index loads the surface serves the neutral action, fallback `item_index_missing`
(the log names the asset to materialize).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import redis
from feast import FeatureStore
from feast.errors import FeatureServiceNotFoundException

from feature_repo.embeddings import EMBEDDING_FEATURES
from serving.core.clock import Clock
from serving.decision.item_caps import ItemCaps
from serving.decision.item_index_watcher import ItemIndexHolder, ServedIndex
from serving.decision.service import (
    FEATURES_CIRCUIT_OPEN, FEATURES_LATE, FEATURES_UNAVAILABLE, ITEM_INDEX_MISSING, NO_USER_VECTOR,
    POLICY_STORE_UNAVAILABLE, POPULAR_ITEMS, RESERVATION_CONFLICT, DecisionService, Outcome, Steps,
)
from serving.core.schemas import DecisionRequest
from serving.decision.surfaces import PolicyConfig, SurfaceConfig
from serving.ops.metrics import ServiceMetrics
from serving.ops.redaction import redis_failure
from serving.policy.consent import consent_allows, consented
from serving.policy.eligibility import eligible_actions
from serving.policy.slates import draw_slate
from serving.store.features import FeatureClient, FeatureRead
from serving.store.round_trip import RoundTrip

log = logging.getLogger(__name__)

ITEM_ACTION_PREFIX = "item:"
INDEX_MODEL_NAME = "item_index"  # the decision record's model_name on item surfaces; model_version: the index version


def item_action(item_id: int) -> str:
    """The action id of an item in responses and decision records: `item:<id>`."""
    return f"{ITEM_ACTION_PREFIX}{int(item_id)}"


def item_of(action_id: str) -> int | None:
    """The item id of an item action id (None for any other action, e.g. the neutral one)."""
    return int(action_id[len(ITEM_ACTION_PREFIX):]) if action_id.startswith(ITEM_ACTION_PREFIX) else None


class MissingEmbeddingFeatures(ValueError):
    """An item surface names a feature service without the user embedding."""


class ItemSurface:
    """One ann_items surface: its configuration, the index it serves, the vector reader and the per-item caps."""

    def __init__(
        self, config: SurfaceConfig, holder: ItemIndexHolder, features: FeatureClient, caps: ItemCaps,
        rng: np.random.Generator, profile: FeatureClient, rules_features: list[str],
    ):
        if config.candidates.ann is None:
            raise ValueError(f"surface {config.name!r} is not an ann_items surface")
        missing = sorted(set(EMBEDDING_FEATURES) - set(features.feature_names))
        if missing:
            raise MissingEmbeddingFeatures(
                f"surface {config.name!r} reads feature service {features.feature_service_name!r}, which lacks the "
                f"user embedding features {missing[:3]}...; name the candidates_v1 feature service in the surface file"
            )
        self.config = config
        self.ann = config.candidates.ann
        self.holder = holder
        self.features = features
        self.profile = profile  # region_code and the consent features: the regional rules read them
        self._profile_order = rules_features
        self.caps = caps
        self.rng = rng  # its own stream: item draws leave the other surfaces' exploration draws as they were
        self._rng_lock = threading.Lock()
        self._order = list(EMBEDDING_FEATURES)
        self._excluded = frozenset(int(i) for i in self.ann.exclude_items)

    def _neutral(
        self, reason: str | None, served: ServedIndex | None, read: FeatureRead | None = None,
        region: str | None = None,
    ) -> Outcome:
        neutral = self.config.neutral_action
        return Outcome([neutral], [0.0], [1.0], [neutral], [0.0], [1.0], reason, region, None, read=read,
                       model=self._model_of(served), feature_service=self.features.feature_service_name)

    @staticmethod
    def _model_of(served: ServedIndex | None) -> tuple[str, str]:
        return INDEX_MODEL_NAME, served.version if served is not None else "none"

    def decide(
        self, service: DecisionService, request: DecisionRequest, ukey: str, overrides: dict,
        timings: dict[str, float], started: float,
    ) -> Steps[Outcome]:
        """The item decision as steps (see the module docstring); never raises on Redis faults."""
        served = self.holder.served  # read once: a swap during this decision does not change what it uses
        if served is None:
            return self._neutral(ITEM_INDEX_MISSING, None)
        if not service.breaker.allow():
            return self._neutral(FEATURES_CIRCUIT_OPEN, served)
        user_id = service.pseudonymizer(request.user_id)  # the stores' id of the user (feature_repo/pseudonyms.py)
        pipe = RoundTrip(service.client)
        parse_read = self.features.queue(pipe, user_id, self._order)
        parse_profile = self.profile.queue(pipe, user_id, self._profile_order)
        consent = service.consent.queue(pipe, user_id, self._profile_order) if service.consent is not None else None
        parse_capped = self.caps.queue_capped(pipe, ukey, service.clock.time())
        try:
            replies = yield pipe, True
        except redis.exceptions.RedisError as exc:
            service.breaker.record_failure()
            log.warning("user %s: online store read failed: %s", ukey, redis_failure(exc))
            return self._neutral(FEATURES_UNAVAILABLE, served)
        service.breaker.record_success()
        profile = parse_profile(replies)
        if consent is not None:
            profile = consent(replies, profile)  # the later of the consent event and the profile row
        read, capped = with_profile(parse_read(replies), profile), parse_capped(replies)
        region = service.config.region_of(profile.by_name.get("region_code"))
        rules = service.config.rules_for(region, (request.context or {}).get("region"))
        has_consent = all(consented(profile.by_name.get(feature)) for feature in rules.consent_features)
        timings["features"] = time.perf_counter() - started
        if timings["features"] * 1000.0 > self.config.deadlines.features_ms:
            service.metrics.deadline_breaches.labels(self.config.name, "features").inc()
            return self._neutral(FEATURES_LATE, served, read, region)

        scoring_started = time.perf_counter()
        vector = read.values if read.found and not np.isnan(read.values).any() else None
        if vector is not None:
            item_ids, scores = served.index.top_k(vector, self.ann.k)
            fallback = None
        elif self.ann.popular_fallback and served.popular is not None:
            top = served.popular[: self.ann.k]
            item_ids, scores = served.index.item_ids[top], served.index.popularity[top]
            fallback = POPULAR_ITEMS
        else:
            return self._neutral(NO_USER_VECTOR, served, read, region)
        timings["scoring"] = scoring = time.perf_counter() - scoring_started
        if scoring * 1000.0 > self.config.deadlines.scoring_ms:  # counted; its result is used (as for the models)
            service.metrics.deadline_breaches.labels(self.config.name, "scoring").inc()

        policy_started = time.perf_counter()
        blocked = self._excluded | capped
        keep = [i for i, item in enumerate(item_ids.tolist()) if item not in blocked] if blocked else None
        if keep is not None:
            item_ids, scores = item_ids[keep], scores[keep]
        neutral = self.config.neutral_action
        if not has_consent or rules.allowed_actions is not None or rules.blocked_actions:  # the region's rules
            actions = [item_action(i) for i in item_ids.tolist()]
            allowed = set(consent_allows(
                eligible_actions(actions, neutral, rules.allowed_actions, rules.blocked_actions), neutral,
                has_consent, rules.consent_for_all_actions, rules.consent_actions,
            ))
            keep = [i for i, action in enumerate(actions) if action in allowed]
            item_ids, scores = item_ids[keep], scores[keep]
        if self.ann.rank_top is not None:  # best first: the draw, and the record, cover exactly these
            item_ids, scores = item_ids[: self.ann.rank_top], scores[: self.ann.rank_top]
        if len(item_ids) == 0:  # no consent, or every retrieved item excluded or capped: nothing to show
            outcome = self._neutral(None, served, read, region)
            timings["policy"] = time.perf_counter() - policy_started
            return outcome
        candidates = [item_action(i) for i in item_ids.tolist()]
        scores = np.asarray(scores, np.float64)
        if fallback is None:
            exploration = self.config.exploration.build(overrides.get("epsilon"))
            with self._rng_lock:
                slate = draw_slate(scores, np.zeros((len(scores), 1)), self.config.slate_size, 0.0, exploration,
                                   self.rng)
            indices, probabilities, slots = slate.indices, slate.probabilities, slate.slot_distributions
            first = slate.first_slot
        else:  # popular items, greedily: each slot is the next most popular, with probability 1
            indices = list(range(min(self.config.slate_size, len(candidates))))
            probabilities = [1.0] * len(indices)
            slots = [[1.0 if j == i else 0.0 for j in range(len(candidates))] for i in indices]
            first = slots[0]

        reserve = RoundTrip(service.client)
        kept_of = self.caps.queue_reserve(reserve, ukey, item_ids[indices].tolist(), uuid.uuid4().hex,
                                          service.clock.time())
        try:
            kept = kept_of((yield reserve, False) if reserve.command_stack else [])
        except redis.exceptions.RedisError as exc:
            service.breaker.record_failure()
            log.warning("item cap reservation on surface %s failed: %s", self.config.name, redis_failure(exc))
            return self._neutral(POLICY_STORE_UNAVAILABLE, served, read, region)
        if kept == 0:  # a concurrent decision for this user took the first item's last show
            return self._neutral(RESERVATION_CONFLICT, served, read, region)
        if kept < len(indices):
            service.metrics.cap_refusals.labels(self.config.name).inc()
        timings["policy"] = time.perf_counter() - policy_started
        chosen = indices[:kept]
        return Outcome(
            [candidates[i] for i in chosen], [float(scores[i]) for i in chosen], probabilities[:kept], candidates,
            scores.tolist(), first, fallback, region, None, slots[:kept], read=read, model=self._model_of(served),
            feature_service=self.features.feature_service_name,
        )


def build_item_surfaces(
    config: PolicyConfig, store: FeatureStore, client: redis.Redis, metrics: ServiceMetrics, clock: Clock,
    data_dir: Path, seed: int | None,
) -> dict[str, ItemSurface]:
    """Every ann_items surface with its index loaded (when one is published: else it serves `item_index_missing`
    until the watcher finds one), its vector reader and its per-item caps; a feature service that the Feast registry
    lacks, or that lacks the embedding, stops start-up with what to fix."""
    surfaces: dict[str, ItemSurface] = {}
    for position, (name, surface) in enumerate(sorted(config.item_surfaces.items())):
        ann = surface.candidates.ann
        features = _client(store, name, surface.feature_service)
        root = Path(ann.index_dir) if Path(ann.index_dir).is_absolute() else data_dir / ann.index_dir
        holder = ItemIndexHolder(name, root, ann.ef_search, len(EMBEDDING_FEATURES), metrics, ann.refresh_s)
        holder.refresh()
        caps = ItemCaps(client, surface.item_caps, clock=clock.time)
        rng = np.random.default_rng(None if seed is None else [seed, position])
        profile = _client(store, name, ann.profile_service)
        rules_features = ["region_code", *sorted({b.consent.feature for b in config.regions.values()})]
        missing = sorted(set(rules_features) - set(profile.feature_names))
        if missing:
            raise MissingEmbeddingFeatures(
                f"surface {name!r}: profile_service {ann.profile_service!r} lacks {missing}, which the region "
                "bundles read; name the feature service of the profile (uplift_v1)"
            )
        surfaces[name] = ItemSurface(surface, holder, features, caps, rng, profile, rules_features)
    return surfaces


def _client(store: FeatureStore, surface: str, feature_service: str) -> FeatureClient:
    try:
        return FeatureClient(store, feature_service)
    except FeatureServiceNotFoundException as exc:
        raise MissingEmbeddingFeatures(
            f"surface {surface!r} reads feature service {feature_service!r}, which the Feast registry does not "
            "have; run `feast apply` (the feast_registry asset)"
        ) from exc


def with_profile(read: FeatureRead, profile: FeatureRead) -> FeatureRead:
    """The vector read with the profile's views beside it: the decision record logs both (what the rules read)."""
    return FeatureRead(
        values=read.values, found=read.found, by_name={**profile.by_name, **read.by_name},
        event_timestamps={**profile.event_timestamps, **read.event_timestamps},
        by_view={**profile.by_view, **read.by_view},
    )
