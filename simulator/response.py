"""Ground-truth response model: how each user reacts to each action, in closed form and as a sampler.

Per session a user converts with p(u, a) = sigmoid(base_logit_u + effect(u, a)), buys one item drawn
from P(i | u) (see choice.py) at price_i · (1 − discount if the action covers the item), after an
Exponential(mean_purchase_delay_hours) delay. Everything here is vectorised over users.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.actions import ACTIONS, N_ACTIONS, UNIT_COSTS, discount_multipliers
from simulator.choice import expected_item_values, sample_items
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


def attribution_probability(shop: Shop, window_hours: float | None = None) -> float:
    """P(delay < window) for the Exponential purchase delay; window defaults to the config's attribution window."""
    window = shop.config.attribution_window_hours if window_hours is None else float(window_hours)
    if window < 0:
        raise ValueError(f"window_hours must be >= 0, got {window}")
    if np.isinf(window):
        return 1.0
    return float(1.0 - np.exp(-window / shop.config.mean_purchase_delay_hours))


def expected_revenue(shop: Shop, user_ids: np.ndarray, window_hours: float | None = None) -> np.ndarray:
    """Exact expected purchase revenue of one exposure within the window, shape (n, n_actions) in ACTION_IDS order."""
    u = _user_index(shop, user_ids)
    return conversion_probability(shop, u) * expected_order_value(shop, u) * attribution_probability(shop, window_hours)


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
    delay[buyers] = rng.exponential(shop.config.mean_purchase_delay_hours, size=len(buyers))
    return SessionOutcomes(converted=converted, item_id=item_id, revenue=revenue, delay_hours=delay)
