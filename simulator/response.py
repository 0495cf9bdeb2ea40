"""Ground-truth response model: how each user reacts to each action, in closed form and as a sampler.

Per session a user converts with p(u, a) = sigmoid(base_logit_u + effect(u, a)), buys one item drawn
from P(i | u) (see choice.py) at price_i · (1 − discount if the action covers the item), after a delay D
drawn from the config's delay model:

    exponential        P(D > t) = exp(−t / mean_purchase_delay_hours)          (every action; the default shop)
    weibull_by_action  P(D > t | a) = exp(−(t / η_a)^k_a),  η_a = mean_a / Γ(1 + 1/k_a)   (WEIBULL_DELAYS)

Only purchases with D < W (the attribution window) count, so the ground truth multiplies by the delay CDF
F_a(W) = P(D < W | a). Everything here is vectorised over users.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simulator.actions import ACTION_IDS, ACTION_INDEX, ACTIONS, N_ACTIONS, UNIT_COSTS, discount_multipliers
from simulator.choice import expected_item_values, sample_items
from simulator.config import ShopConfig
from simulator.world import BASE_LOGIT_MEAN, BASE_LOGIT_SD, Shop

# Effect sizes on the logit. Chosen so that each promotion is clearly best for some segment
# (+0.3 … +1.2 where it fits) and some annoy the wrong users (−0.1 … −0.4).
PCT10_SLOPE, PCT10_OFFSET = 0.8, -0.05  # linear in price sensitivity
PCT20_SLOPE, PCT20_OFFSET = 1.3, -0.10  # quadratic in price sensitivity: only the very sensitive care
CATEGORY_BASE, CATEGORY_SENS = 0.6, 0.6  # times the user's taste mass in the discounted category
FREE_SHIP_MAX, FREE_SHIP_STEEPNESS, FREE_SHIP_OFFSET = 1.0, 2.5, -0.10  # cheap-basket buyers
PUSH_MOBILE, PUSH_DESKTOP = 0.5, -0.3  # desktop users get the push on a device they do not use
EMAIL_OFFSET, EMAIL_SLOPE, EMAIL_MIN, EMAIL_MAX = -0.15, -0.7, -0.40, 1.0  # in log(activity)
LOYALTY_OFFSET, LOYALTY_SLOPE, LOYALTY_MIN, LOYALTY_MAX = 0.20, 0.50, -0.30, 1.20  # in z(base_logit)

# Purchase delay per action under delay_model="weibull_by_action": (Weibull shape k, mean hours). Set from how
# people react to each kind of promotion, not fitted to anything. k < 1: most buy at once, the rest much later
# (a falling hazard); k > 1: hardly anyone buys at once, purchases bunch up later (a rising hazard).
WEIBULL_DELAYS: dict[str, tuple[float, float]] = {
    "no_action": (0.8, 10.0),  # organic buying: today's mean; many buy in the session, some return days later
    "pct10_sitewide": (2.0, 20.0),  # a discount gets people to compare and wait for the evening or pay day
    "pct20_sitewide": (2.0, 20.0),
    "cat1_pct15": (2.0, 20.0),
    "cat3_pct15": (2.0, 20.0),
    "free_shipping": (1.5, 16.0),  # the basket is filled up over a few visits to make the free shipping count
    "push_reminder": (0.6, 4.0),  # tapped within minutes on the phone, or forgotten until much later
    "email_digest": (0.6, 12.0),  # opened hours after it is sent, then the same fast-or-forgotten pattern
    "loyalty_points": (1.5, 30.0),  # points are banked for the next planned shop, a day or more away
}
if set(WEIBULL_DELAYS) != set(ACTION_IDS):
    raise RuntimeError(f"WEIBULL_DELAYS must name every action exactly once: {sorted(ACTION_IDS)}")


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function 1 / (1 + exp(−x))."""
    return 1.0 / (1.0 + np.exp(-x))


def _user_index(shop: Shop, user_ids: np.ndarray) -> np.ndarray:
    """Validate user ids (must be 0..n_users-1) and return them as an int64 array."""
    idx = np.asarray(user_ids, dtype=np.int64).ravel()
    if idx.size and (idx.min() < 0 or idx.max() >= shop.n_users):
        raise ValueError(f"user_ids must lie in [0, {shop.n_users}), got range [{idx.min()}, {idx.max()}]")
    return idx


def action_effects(shop: Shop, user_ids: np.ndarray) -> np.ndarray:
    """Logit shift effect(u, a) of every action, shape (n, n_actions), column 0 (no_action) is 0."""
    u = _user_index(shop, user_ids)
    sens = shop.price_sensitivity[u]
    eff = np.zeros((len(u), N_ACTIONS), dtype=np.float64)
    for a, action in enumerate(ACTIONS):
        if action.kind == "sitewide_discount":
            # The deeper discount only pays off for the very price sensitive, hence the square.
            if action.action_id == "pct10_sitewide":
                eff[:, a] = PCT10_OFFSET + PCT10_SLOPE * sens
            else:
                eff[:, a] = PCT20_OFFSET + PCT20_SLOPE * sens**2
        elif action.kind == "category_discount":
            # Only users who shop that category notice the discount; sensitive ones respond more.
            eff[:, a] = shop.taste[u, action.category_id] * (CATEGORY_BASE + CATEGORY_SENS * sens)
        elif action.kind == "free_shipping":
            # Shipping is a large share of a cheap basket and negligible for an expensive one.
            log_ratio = np.log(shop.basket_reference) - np.log(shop.basket_value[u])
            eff[:, a] = FREE_SHIP_OFFSET + FREE_SHIP_MAX * sigmoid(FREE_SHIP_STEEPNESS * log_ratio)
        elif action.kind == "push_reminder":
            eff[:, a] = np.where(shop.is_mobile[u], PUSH_MOBILE, PUSH_DESKTOP)
        elif action.kind == "email_digest":
            # A digest reminds rare visitors of the shop but is noise to those who visit daily.
            eff[:, a] = np.clip(EMAIL_OFFSET + EMAIL_SLOPE * np.log(shop.activity[u]), EMAIL_MIN, EMAIL_MAX)
        elif action.kind == "loyalty_points":
            z = (shop.base_logit[u] - BASE_LOGIT_MEAN) / BASE_LOGIT_SD
            eff[:, a] = np.clip(LOYALTY_OFFSET + LOYALTY_SLOPE * z, LOYALTY_MIN, LOYALTY_MAX)
    return eff


def conversion_probability(shop: Shop, user_ids: np.ndarray) -> np.ndarray:
    """p(u, a) = sigmoid(base_logit_u + effect(u, a)) per session, shape (n, n_actions)."""
    u = _user_index(shop, user_ids)
    return sigmoid(shop.base_logit[u][:, None] + action_effects(shop, u))


def expected_order_value(shop: Shop, user_ids: np.ndarray) -> np.ndarray:
    """E[revenue | purchase, u, a] = Σ_i P(i|u) · price_i · (1 − discount_a,i), shape (n, n_actions)."""
    u = _user_index(shop, user_ids)
    values = (discount_multipliers(shop.item_category) * shop.item_price[None, :]).T  # (n_items, n_actions)
    return expected_item_values(shop.price_sensitivity[u], shop.taste[u], shop.item_category, shop.item_price, values)


def delay_parameters(config: ShopConfig) -> tuple[np.ndarray, np.ndarray]:
    """Weibull shape k_a and scale η_a (hours) of the purchase delay per action (exponential: k = 1, η = mean)."""
    if config.delay_model == "exponential":
        return np.ones(N_ACTIONS), np.full(N_ACTIONS, float(config.mean_purchase_delay_hours))
    if config.delay_model == "weibull_by_action":
        shape = np.array([WEIBULL_DELAYS[a][0] for a in ACTION_IDS])
        mean = np.array([WEIBULL_DELAYS[a][1] for a in ACTION_IDS])
        return shape, mean / np.array([math.gamma(1.0 + 1.0 / k) for k in shape])
    raise ValueError(f"unknown delay_model {config.delay_model!r}; see simulator.config.DELAY_MODELS")


def delay_cdf(config: ShopConfig, hours: float) -> np.ndarray:
    """P(D < hours | a) for every action, shape (n_actions,) in ACTION_IDS order."""
    t = float(hours)
    if t < 0:
        raise ValueError(f"hours must be >= 0, got {t}")
    if np.isinf(t):
        return np.ones(N_ACTIONS)
    if config.delay_model == "exponential":
        # Written as before the delay models existed, so the default shop's ground truth is unchanged bit for bit.
        return np.full(N_ACTIONS, 1.0 - np.exp(-t / config.mean_purchase_delay_hours))
    shape, scale = delay_parameters(config)
    return 1.0 - np.exp(-((t / scale) ** shape))


def attribution_probabilities(shop: Shop, window_hours: float | None = None) -> np.ndarray:
    """P(delay < window | a) per action, shape (n_actions,); window defaults to the config's attribution window."""
    window = shop.config.attribution_window_hours if window_hours is None else float(window_hours)
    if window < 0:
        raise ValueError(f"window_hours must be >= 0, got {window}")
    return delay_cdf(shop.config, window)


def attribution_probability(shop: Shop, window_hours: float | None = None, action_id: str | None = None) -> float:
    """P(delay < window) for one action; action_id may be omitted only when the delay is the same for all."""
    probabilities = attribution_probabilities(shop, window_hours)
    if action_id is not None:
        if action_id not in ACTION_INDEX:
            raise ValueError(f"unknown action_id {action_id!r}; known ids are {list(ACTION_IDS)}")
        return float(probabilities[ACTION_INDEX[action_id]])
    if not np.all(probabilities == probabilities[0]):
        raise ValueError(
            f"delay_model {shop.config.delay_model!r} differs by action: pass action_id, "
            "or use attribution_probabilities() for all actions"
        )
    return float(probabilities[0])


def sample_delays(config: ShopConfig, rng: np.random.Generator, action_index: np.ndarray) -> np.ndarray:
    """Purchase delays in hours for converted sessions with the given action indices, from the config's model."""
    a = np.asarray(action_index, dtype=np.int64).ravel()
    if config.delay_model == "exponential":
        return rng.exponential(config.mean_purchase_delay_hours, size=len(a))
    shape, scale = delay_parameters(config)
    return scale[a] * rng.weibull(shape[a])


def expected_revenue(shop: Shop, user_ids: np.ndarray, window_hours: float | None = None) -> np.ndarray:
    """Exact expected purchase revenue of one exposure within the window, shape (n, n_actions) in ACTION_IDS order."""
    u = _user_index(shop, user_ids)
    in_window = attribution_probabilities(shop, window_hours)[None, :]
    return conversion_probability(shop, u) * expected_order_value(shop, u) * in_window


def expected_net_value(shop: Shop, user_ids: np.ndarray, window_hours: float | None = None) -> np.ndarray:
    """expected_revenue minus each action's unit_cost per exposure, shape (n, n_actions)."""
    return expected_revenue(shop, user_ids, window_hours) - UNIT_COSTS[None, :]


@dataclass(frozen=True)
class SessionOutcomes:
    """Sampled result of one exposure per session; item/revenue/delay are only meaningful where converted."""

    converted: np.ndarray  # bool (n,)
    item_id: np.ndarray  # int64 (n,), -1 where not converted
    revenue: np.ndarray  # float64 (n,), 0.0 where not converted
    delay_hours: np.ndarray  # float64 (n,), NaN where not converted


def sample_session_outcomes(
    shop: Shop, rng: np.random.Generator, user_ids: np.ndarray, action_index: np.ndarray
) -> SessionOutcomes:
    """Draw conversion, purchased item, revenue and purchase delay for sessions (user_ids[k], action_index[k])."""
    u = _user_index(shop, user_ids)
    a = np.asarray(action_index, dtype=np.int64).ravel()
    if len(a) != len(u):
        raise ValueError(f"user_ids and action_index differ in length ({len(u)} vs {len(a)})")
    # Only the chosen action's logit is needed: gather instead of computing all 9 probabilities' sigmoid.
    logit = shop.base_logit[u] + np.take_along_axis(action_effects(shop, u), a[:, None], axis=1)[:, 0]
    converted = rng.random(len(u)) < sigmoid(logit)
    buyers = np.flatnonzero(converted)
    item_id = np.full(len(u), -1, dtype=np.int64)
    revenue = np.zeros(len(u), dtype=np.float64)
    delay = np.full(len(u), np.nan, dtype=np.float64)
    items = sample_items(
        rng, shop.price_sensitivity, shop.taste, shop.item_category, shop.item_price, u[buyers]
    )
    multipliers = discount_multipliers(shop.item_category)
    item_id[buyers] = items
    revenue[buyers] = np.round(shop.item_price[items] * multipliers[a[buyers], items], 2)
    delay[buyers] = sample_delays(shop.config, rng, a[buyers])
    return SessionOutcomes(converted=converted, item_id=item_id, revenue=revenue, delay_hours=delay)
