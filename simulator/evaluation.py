"""True value of a targeting policy under the ground-truth response model, next to reference policies."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from simulator.actions import ACTION_IDS, ACTION_INDEX, CONTROL_ACTION, UNIT_COSTS, action_index
from simulator.response import expected_net_value, expected_revenue
from simulator.world import Shop


def _summary(revenue: np.ndarray, net: np.ndarray, base_revenue: float, base_net: float) -> dict[str, float]:
    """Mean per-user revenue / net value and their increments over no_action."""
    rev, val = float(np.mean(revenue)), float(np.mean(net))
    return {
        "revenue_per_user": rev,
        "net_value_per_user": val,
        "incremental_revenue_per_user": rev - base_revenue,
        "incremental_net_value_per_user": val - base_net,
    }


def policy_value(
    shop: Shop,
    user_ids: Sequence[int] | np.ndarray,
    chosen_action_ids: Sequence[str] | np.ndarray,
    window_hours: float | None = None,
) -> dict[str, dict[str, float]]:
    """Expected per-user revenue/net value of one exposure chosen by a policy vs no_action, random and oracle.

    Keys: "policy", "no_action", "random" (uniform over all 9 actions), "random_promotion" (uniform over
    the 8 promotions), "oracle" (per-user argmax of expected net value); each maps to revenue_per_user,
    net_value_per_user, incremental_revenue_per_user, incremental_net_value_per_user (vs no_action).
    """
    users = np.asarray(user_ids, dtype=np.int64).ravel()
    chosen = np.asarray(chosen_action_ids, dtype=object).ravel()
    if len(users) != len(chosen):
        raise ValueError(f"user_ids and chosen_action_ids differ in length ({len(users)} vs {len(chosen)})")
    if len(users) == 0:
        raise ValueError("policy_value needs at least one user")
    chosen_idx = action_index(chosen)  # raises ValueError naming unknown ids

    revenue = expected_revenue(shop, users, window_hours)
    net = revenue - UNIT_COSTS[None, :]
    rows = np.arange(len(users))
    control = ACTION_INDEX[CONTROL_ACTION]
    base_rev, base_net = float(revenue[:, control].mean()), float(net[:, control].mean())
    promotions = [i for i in range(revenue.shape[1]) if i != control]
    oracle_idx = net.argmax(axis=1)

    return {
        "policy": _summary(revenue[rows, chosen_idx], net[rows, chosen_idx], base_rev, base_net),
        "no_action": _summary(revenue[:, control], net[:, control], base_rev, base_net),
        "random": _summary(revenue.mean(axis=1), net.mean(axis=1), base_rev, base_net),
        "random_promotion": _summary(
            revenue[:, promotions].mean(axis=1), net[:, promotions].mean(axis=1), base_rev, base_net
        ),
        "oracle": _summary(revenue[rows, oracle_idx], net[rows, oracle_idx], base_rev, base_net),
    }


def oracle_actions(shop: Shop, user_ids: Sequence[int] | np.ndarray, window_hours: float | None = None) -> np.ndarray:
    """Per-user action id maximising expected net value (the best possible policy)."""
    best = expected_net_value(shop, np.asarray(user_ids, dtype=np.int64), window_hours).argmax(axis=1)
    return np.array(ACTION_IDS, dtype=object)[best]
