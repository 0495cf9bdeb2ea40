"""A fast decision stream from the simulated shop with injected drift, for the drift guards' tests and bench.

Users of a small shop (simulator/world.py) arrive one decision at a time; each decision logs the features a
serving read would (the activity and profile views' names, drawn around the user's latent traits), the scores of a
linear uplift model fitted on a training window to the shop's true net uplift, an epsilon-greedy draw with its
probabilities, and — once matured, `maturity` decisions later — the realised net value sampled from the ground
truth (simulator/response.py). From decision `shift` on, one drift is injected:

    shifted_population  70 % of arrivals are newcomers: a quarter of the activity, a conversion logit 1.2 lower,
                        more price sensitive (a campaign brought bargain hunters)
    broken_feature      avg_order_value is logged in cents (×100): an upstream unit change the model reads as is
    price_shock         every item's price × 0.6 (a market-wide price cut): order values and viewed prices fall
    stationary          nothing changes (the false-alarm runs)

The stream yields records in the decision log's format (serving/store/decision_log.py) so the guards read them
exactly as they read the Redis stream or the lake; `cautious_from` makes the stream follow the cautious policy
(serving/ops/cautious.py) from that decision on, and `truth` gives the exact expected value of every decision under
the policy served and under the normal policy, so the value the cautious switch protected can be measured.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulator.actions import ACTION_IDS, UNIT_COSTS
from simulator.choice import expected_item_values
from simulator.config import ShopConfig
from simulator.response import attribution_probabilities, conversion_probability, expected_order_value
from simulator.world import Shop, build_shop

SCENARIOS = ("stationary", "shifted_population", "broken_feature", "price_shock")
ACTIVITY = ("days_since_last_visit", "page_views_total", "purchases_total", "avg_order_value", "avg_viewed_price",
            "mobile_view_share", "activity_decayed")
PROFILE = ("region_code", "is_mobile", "consent_marketing")
NEWCOMER_SHARE = 0.7
PRICE_FACTOR = 0.6
T0 = 1.8e9  # the ts of decision 0 (epoch seconds); decision i is logged at T0 + i


@dataclass(frozen=True)
class World:
    """Per-user arrays of one regime (before or after the shift)."""

    shop: Shop
    activity: np.ndarray
    base_logit: np.ndarray
    basket: np.ndarray
    net: np.ndarray  # (n_users, n_actions) expected net value of one exposure
    convert: np.ndarray  # (n_users, n_actions) P(purchase within the window)
    order: np.ndarray  # (n_users, n_actions) E[revenue | purchase]


def _world(shop: Shop) -> World:
    users = np.arange(shop.n_users)
    convert = conversion_probability(shop, users) * attribution_probabilities(shop)[None, :]
    order = expected_order_value(shop, users)
    return World(shop, shop.activity, shop.base_logit, shop.basket_value, convert * order - UNIT_COSTS[None, :],
                 convert, order)


def _newcomers(shop: Shop) -> Shop:
    sens = np.clip(shop.price_sensitivity + 0.25, 0.01, 0.99)
    return dataclasses.replace(shop, activity=shop.activity * 0.25, base_logit=shop.base_logit - 1.2,
                               price_sensitivity=sens)


def _repriced(shop: Shop) -> Shop:
    price = shop.item_price * PRICE_FACTOR
    basket = expected_item_values(shop.price_sensitivity, shop.taste, shop.item_category, price, price)
    return dataclasses.replace(shop, item_price=price, basket_value=basket, basket_reference=float(np.median(basket)))


@dataclass
class Batch:
    """Decisions as arrays (the stream's own view) and as decision records."""

    users: np.ndarray
    features: dict[str, np.ndarray]
    scores: np.ndarray  # (n, n_actions), neutral first (0)
    probabilities: np.ndarray  # (n, n_actions)
    chosen: np.ndarray  # action index
    value: np.ndarray  # realised net value
    expected: np.ndarray  # (n,) exact expected net value under the policy served
    expected_normal: np.ndarray  # (n,) ... under the normal (not cautious) policy
    neutral_forced: np.ndarray  # bool: answered neutral by the cautious switch (fallback cautious_neutral)
    start: int  # index of the first decision in the stream


class DriftStream:
    """Seeded decision stream with one drift injected at decision `shift` (see the module docstring)."""

    def __init__(self, scenario: str = "stationary", seed: int = 0, shift: int = 2000, n_users: int = 3000,
                 n_items: int = 200, epsilon: float = 0.1, training: int = 5000):
        if scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {SCENARIOS}; got {scenario!r}")
        self.scenario, self.shift, self.epsilon = scenario, shift, epsilon
        self.rng = np.random.default_rng([seed, 15])
        shop = build_shop(ShopConfig(n_users=n_users, n_items=n_items, n_days=1, seed=1000 + seed))
        self.before = _world(shop)
        self.after = self.before if scenario in ("stationary", "broken_feature") else _world(
            _newcomers(shop) if scenario == "shifted_population" else _repriced(shop))
        self.position = 0
        self.cautious_from: int | None = None
        self.neutral_share, self.cautious_epsilon = 0.0, epsilon
        train = self._draw_features(self.before, self.rng.integers(0, n_users, training), broken=False)
        self._fit(train[0], self.before.net[train[1]])

    # ------------------------------------------------------------------ the model
    def _matrix(self, features: dict[str, np.ndarray]) -> np.ndarray:
        x = np.column_stack([features[n] for n in self.names])
        x = (x - self._mean) / self._sd
        return np.column_stack([np.nan_to_num(x), np.ones(len(x))])

    def _fit(self, features: dict[str, np.ndarray], net: np.ndarray) -> None:
        """Ridge regression of each promotion's true net uplift over the neutral action on the logged features."""
        self.names = tuple(features)
        x = np.column_stack([features[n] for n in self.names])
        self._mean, self._sd = np.nanmean(x, axis=0), np.nanstd(x, axis=0) + 1e-9
        design = self._matrix(features)
        uplift = net - net[:, [0]]
        gram = design.T @ design + 1.0 * np.eye(design.shape[1])
        self._weights = np.linalg.solve(gram, design.T @ uplift)

    def scores(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """Predicted net uplift of every action (neutral: 0)."""
        s = self._matrix(features) @ self._weights
        s[:, 0] = 0.0
        return s

    # ------------------------------------------------------------------ the stream
    def _draw_features(self, world: World, users: np.ndarray, broken: bool) -> tuple[dict[str, np.ndarray], np.ndarray]:
        rng, shop, n = self.rng, world.shop, len(users)
        act, base, basket = world.activity[users], world.base_logit[users], world.basket[users]
        mobile = shop.is_mobile[users]
        features = {
            "days_since_last_visit": rng.exponential(3.0 / act),
            "page_views_total": rng.poisson(30.0 * act).astype(float),
            "purchases_total": rng.poisson(20.0 * act / (1.0 + np.exp(-base))).astype(float),
            "avg_order_value": basket * rng.lognormal(0.0, 0.25, n),
            "avg_viewed_price": 1.1 * basket * rng.lognormal(0.0, 0.15, n),
            "mobile_view_share": np.where(mobile, rng.beta(8, 2, n), rng.beta(2, 8, n)),
            "activity_decayed": act * rng.gamma(4.0, 0.25, n),
        }
        taste = shop.taste[users]
        for c in range(taste.shape[1]):
            features[f"category_affinity_{c}"] = taste[:, c] * rng.lognormal(0.0, 0.2, n)
        regions = {"north": 0, "south": 1, "east": 2, "west": 3}
        features["region_code"] = shop.users["region"].map(regions).to_numpy(float)[users]
        features["is_mobile"] = mobile.astype(float)
        features["consent_marketing"] = shop.users["consent_marketing"].to_numpy(float)[users]
        if broken:
            features["avg_order_value"] = features["avg_order_value"] * 100.0
        return features, users

    def training_window(self, n: int) -> Batch:
        """`n` decisions of the regime before the shift under the normal policy, outside the stream (its position
        does not move): the window the model was trained on, for the guards' reference."""
        position, cautious_from = self.position, self.cautious_from
        self.position, self.cautious_from = -10**9, None
        shift, self.shift = self.shift, 0
        try:
            return self._draw(n, drifted=False)
        finally:
            self.position, self.cautious_from, self.shift = position, cautious_from, shift

    def cautious(self, from_decision: int, neutral_share: float, epsilon: float) -> None:
        """Follow the cautious policy from `from_decision` on (neutral for a share, exploration lowered)."""
        self.cautious_from, self.neutral_share, self.cautious_epsilon = from_decision, neutral_share, epsilon

    def _probabilities(self, scores: np.ndarray, epsilon: float) -> np.ndarray:
        k = scores.shape[1]
        p = np.full(scores.shape, epsilon / k)
        p[np.arange(len(scores)), scores.argmax(axis=1)] += 1.0 - epsilon
        return p

    def next(self, n: int) -> Batch:
        """The next `n` decisions (split at the shift so each gets its regime)."""
        parts = []
        while n > 0:
            take = n if self.position >= self.shift else min(n, self.shift - self.position)
            parts.append(self._draw(take))
            n -= take
        return parts[0] if len(parts) == 1 else _concat(parts)

    def _draw(self, n: int, drifted: bool | None = None) -> Batch:
        start, rng = self.position, self.rng
        drifted = start >= self.shift if drifted is None else drifted
        world = self.after if drifted else self.before
        users = rng.integers(0, len(world.activity), n)
        if drifted and self.scenario == "shifted_population":
            regulars = rng.random(n) >= NEWCOMER_SHARE
        else:
            regulars = np.zeros(n, bool)
        features, _ = self._draw_features(world, users, broken=drifted and self.scenario == "broken_feature")
        if regulars.any():  # regulars keep the old regime's features and truth
            old, _ = self._draw_features(self.before, users[regulars], broken=False)
            for name in features:
                features[name][regulars] = old[name]
        net = np.where(regulars[:, None], self.before.net[users], world.net[users])
        convert = np.where(regulars[:, None], self.before.convert[users], world.convert[users])
        order = np.where(regulars[:, None], self.before.order[users], world.order[users])
        scores = self.scores(features)
        normal = self._probabilities(scores, self.epsilon)
        index = np.arange(start, start + n)
        cautious = index >= self.cautious_from if self.cautious_from is not None else np.zeros(n, bool)
        forced = cautious & (rng.random(n) < self.neutral_share)
        probabilities = np.where(cautious[:, None], self._probabilities(scores, self.cautious_epsilon), normal)
        cumulative = probabilities.cumsum(axis=1)
        chosen = np.minimum((cumulative < rng.random(n)[:, None]).sum(axis=1), scores.shape[1] - 1)
        chosen[forced] = 0
        rows = np.arange(n)
        bought = rng.random(n) < convert[rows, chosen]
        value = bought * order[rows, chosen] - UNIT_COSTS[chosen]
        served = np.where(forced[:, None], np.eye(scores.shape[1])[0], probabilities)
        self.position += n
        return Batch(users, features, scores, probabilities, chosen, value, (served * net).sum(axis=1),
                     (normal * net).sum(axis=1), forced, start)

    def records(self, batch: Batch, surface: str = "home", model_version: str = "1", t0: float = T0) -> list[dict]:
        """The batch as decision records (DECISION_FORMAT's fields the guards read, `value` once matured)."""
        out = []
        view_of = {name: "user_profile_fv" if name in PROFILE else "user_activity_fv" for name in self.names}
        names = list(self.names)
        for i in range(len(batch.users)):
            views: dict[str, dict] = {"user_activity_fv": {"event_ts": None, "values": {}},
                                      "user_profile_fv": {"event_ts": None, "values": {}}}
            for name in names:
                views[view_of[name]]["values"][name] = float(batch.features[name][i])
            forced = bool(batch.neutral_forced[i])
            out.append({
                "decision_id": f"d{batch.start + i}", "ts": t0 + batch.start + i, "surface": surface,
                "candidates": list(ACTION_IDS),
                "scores": [0.0] * len(ACTION_IDS) if forced else batch.scores[i].tolist(),
                "probabilities": ([1.0] + [0.0] * (len(ACTION_IDS) - 1)) if forced else batch.probabilities[i].tolist(),
                "chosen": [ACTION_IDS[batch.chosen[i]]], "features": views, "model_version": model_version,
                "fallback": "cautious_neutral" if forced else None, "value": float(batch.value[i]),
            })
        return out


def _concat(parts: list[Batch]) -> Batch:
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(Batch):
        values = [getattr(p, f.name) for p in parts]
        if f.name == "features":
            fields[f.name] = {k: np.concatenate([v[k] for v in values]) for k in values[0]}
        elif f.name == "start":
            fields[f.name] = values[0]
        else:
            fields[f.name] = np.concatenate(values)
    return Batch(**fields)

