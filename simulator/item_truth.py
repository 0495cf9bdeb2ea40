"""Ground truth of item recommendations: the exact expected incremental value of a served slate of items.

The shop's choice model weighs taste and price: item i has weight w_ui = taste_u[cat_i] · price_i^(−2·s_u), and
without recommendations a session converts with p0 = sigmoid(b_u) and buys i with probability q_ui = w_ui / W_u,
W_u = Σ_i w_ui. A slate S = (i_1, …, i_n) adds, as a nested logit (simulator/README.md "Item recommendations"):

* position effect: slot j (1-based) is examined with probability e_j = 1 / log2(j + 1) (1, 0.63, 0.5, 0.43, …);
* an item shown in slot j has its weight raised to w_ui · (1 + λ·e_j), λ = ITEM_EXPOSURE_LIFT;
* the purchase logit rises by the log of the catalogue's total weight, b_u + log(W_S / W_u) (the inclusive
  value: more attractive options make a purchase likelier), and the item bought is drawn ∝ the raised weights.

With A = λ Σ_j e_j q_{u,i_j}, B = λ Σ_j e_j q_{u,i_j} price_{i_j}, R0 = Σ_i q_ui price_i and x = e^{b_u}:

    E[revenue | S] = F · x (R0 + B) / (1 + x (1 + A)),    V(S) = E[revenue | S] − E[revenue | ∅]

with F = P(delay < attribution window | no_action). An empty slate is worth exactly 0. Nothing here is drawn at
random and nothing in the existing shop changes: the events, promotions and their truth are untouched.

The oracle maximises V over ordered slates of at most n distinct items: V is a ratio (R0 + B)/(c + A) (c = (1+x)/x),
so Dinkelbach's method is exact. For a ratio t the best slate maximises Σ_j e_j λ q_i (price_i − t), which is the
items of largest positive λ q_i (price_i − t), best first (e_j decreases: the rearrangement inequality); t is then
set to the ratio of that slate, until it no longer grows.
"""

from __future__ import annotations

import numpy as np

from simulator.actions import ACTION_IDS, CONTROL_ACTION
from simulator.choice import choice_probabilities, user_chunks
from simulator.response import attribution_probabilities
from simulator.world import Shop

ITEM_EXPOSURE_LIFT = 1.0
"""λ: an examined recommended item is (1 + λ) times as attractive as when the user has to find it in the catalogue."""

NO_ITEM = -1  # pads slates shorter than the slate width


def examination(n_slots: int) -> np.ndarray:
    """e_j = 1 / log2(j + 1) for slots j = 1..n: the probability that slot j is looked at."""
    return 1.0 / np.log2(np.arange(2, n_slots + 2, dtype=np.float64))


def _validated(shop: Shop, user_ids: np.ndarray, slates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    users = np.asarray(user_ids, dtype=np.int64).ravel()
    if users.size and (users.min() < 0 or users.max() >= shop.n_users):
        raise ValueError(f"user_ids must lie in [0, {shop.n_users}), got range [{users.min()}, {users.max()}]")
    slates = np.asarray(slates, dtype=np.int64)
    if slates.ndim != 2 or len(slates) != len(users):
        raise ValueError(f"slates must be (users, slots) with one row per user ({len(users)}); got {slates.shape}")
    shown = slates[slates != NO_ITEM]
    if shown.size and (shown.min() < 0 or shown.max() >= shop.n_items):
        raise ValueError(f"slate items must lie in [0, {shop.n_items}) or be {NO_ITEM} (empty slot)")
    for row, slate in enumerate(slates):
        items = slate[slate != NO_ITEM]
        if len(np.unique(items)) != len(items):
            raise ValueError(f"slate of row {row} repeats an item: {slate.tolist()}")
    return users, slates


def _in_window(shop: Shop, window_hours: float | None) -> float:
    return float(attribution_probabilities(shop, window_hours)[ACTION_IDS.index(CONTROL_ACTION)])


def _revenue(x: np.ndarray, r0: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x (R0 + B) / (1 + x (1 + A)): expected revenue of a session before the attribution factor."""
    return x * (r0 + b) / (1.0 + x * (1.0 + a))


def item_slate_values(
    shop: Shop, user_ids: np.ndarray, slates: np.ndarray, window_hours: float | None = None,
    lift: float = ITEM_EXPOSURE_LIFT,
) -> np.ndarray:
    """Exact expected incremental revenue of showing each user their slate vs showing nothing, shape (n,).

    `slates` is (n, slots) of item ids in slot order (NO_ITEM pads a shorter slate; a row of NO_ITEM is worth 0)."""
    users, slates = _validated(shop, user_ids, slates)
    weight = lift * examination(slates.shape[1])[None, :] * (slates != NO_ITEM)
    items = np.where(slates == NO_ITEM, 0, slates)
    price = shop.item_price
    out = np.empty(len(users))
    for block in user_chunks(len(users)):
        u = users[block]
        q = choice_probabilities(shop.price_sensitivity[u], shop.taste[u], shop.item_category, price)
        x = np.exp(shop.base_logit[u])
        r0 = q @ price
        shown = np.take_along_axis(q, items[block], axis=1) * weight[block]
        a, b = shown.sum(axis=1), (shown * price[items[block]]).sum(axis=1)
        out[block] = _revenue(x, r0, a, b) - _revenue(x, r0, np.zeros_like(a), np.zeros_like(b))
    return out * _in_window(shop, window_hours)


def oracle_item_slates(
    shop: Shop, user_ids: np.ndarray, size: int, window_hours: float | None = None, lift: float = ITEM_EXPOSURE_LIFT,
) -> tuple[np.ndarray, np.ndarray]:
    """The best ordered slate of at most `size` distinct items per user and its value: (slates (n, size) padded
    with NO_ITEM, values (n,)); no slate of at most `size` items is worth more (Dinkelbach, exact)."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    users = np.asarray(user_ids, dtype=np.int64).ravel()
    _validated(shop, users, np.full((len(users), 1), NO_ITEM))
    size = min(size, shop.n_items)
    e = lift * examination(size)
    price = shop.item_price
    slates = np.full((len(users), size), NO_ITEM, dtype=np.int64)
    for block in user_chunks(len(users)):
        u = users[block]
        q = choice_probabilities(shop.price_sensitivity[u], shop.taste[u], shop.item_category, price)
        x = np.exp(shop.base_logit[u])
        c = (1.0 + x) / x
        ratio = (q @ price) / c  # the empty slate's ratio
        chosen = np.full((len(u), size), NO_ITEM, dtype=np.int64)
        for _ in range(shop.n_items + 1):  # Dinkelbach: the ratio strictly grows until the best slate; finite
            gain = q * (price[None, :] - ratio[:, None])
            top = np.argsort(-gain, axis=1, kind="stable")[:, :size]
            positive = np.take_along_axis(gain, top, axis=1) > 0.0
            candidate = np.where(positive, top, NO_ITEM)
            shown = np.take_along_axis(q, top, axis=1) * e[None, :] * positive
            new_ratio = ((q @ price) + (shown * price[top]).sum(axis=1)) / (c + shown.sum(axis=1))
            better = new_ratio > ratio * (1.0 + 1e-12)
            if not better.any():
                break
            chosen[better], ratio[better] = candidate[better], new_ratio[better]
        slates[block] = chosen
    return slates, item_slate_values(shop, users, slates, window_hours, lift)
