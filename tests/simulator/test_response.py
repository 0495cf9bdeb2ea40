from __future__ import annotations

import math

import numpy as np
import pytest

from simulator import ACTION_IDS, CONTROL_ACTION, Shop, ShopConfig, build_shop, expected_revenue
from simulator.actions import ACTION_INDEX, ACTIONS, UNIT_COSTS
from simulator.response import (
    action_effects,
    attribution_probability,
    conversion_probability,
    expected_net_value,
    sample_session_outcomes,
)


def _brute_force_revenue(shop: Shop, u: int, action_id: str, window_hours: float) -> float:
    """Closed form written out item by item in plain Python, independent of the vectorised code."""
    action = ACTIONS[ACTION_IDS.index(action_id)]
    s = float(shop.price_sensitivity[u])
    weights, values = [], []
    for _, row in shop.items.iterrows():
        cat, price = int(row["category_id"]), float(row["price"])
        weights.append(float(shop.taste[u, cat]) * price ** (-2.0 * s))
        covered = action.kind == "sitewide_discount" or (
            action.kind == "category_discount" and action.category_id == cat
        )
        values.append(price * (1.0 - action.discount) if covered else price)
    order_value = sum(w * v for w, v in zip(weights, values)) / sum(weights)
    logit = float(shop.base_logit[u]) + float(action_effects(shop, np.array([u]))[0, ACTION_IDS.index(action_id)])
    p = 1.0 / (1.0 + math.exp(-logit))
    p_window = 1.0 - math.exp(-window_hours / shop.config.mean_purchase_delay_hours)
    return p * order_value * p_window


@pytest.fixture(scope="module")
def shop() -> Shop:
    return build_shop(ShopConfig(n_users=3_000, n_items=120, seed=21))


def test_shape_and_column_order(shop: Shop) -> None:
    users = np.array([5, 0, 17, 5])
    rev = expected_revenue(shop, users)
    assert rev.shape == (4, len(ACTION_IDS)) == (4, 9)
    assert ACTION_IDS[0] == CONTROL_ACTION
    np.testing.assert_array_equal(rev[0], rev[3])  # same user, same row
    assert (rev > 0).all()


@pytest.mark.parametrize("u", [0, 7, 1234])
def test_no_action_column_matches_brute_force(shop: Shop, u: int) -> None:
    rev = expected_revenue(shop, np.array([u]))
    assert rev[0, 0] == pytest.approx(_brute_force_revenue(shop, u, CONTROL_ACTION, 72.0), rel=1e-9)
    # with no_action there is no effect at all: p is exactly sigmoid(base_logit)
    assert action_effects(shop, np.array([u]))[0, 0] == 0.0


@pytest.mark.parametrize("action_id", ["pct20_sitewide", "cat1_pct15", "cat3_pct15", "push_reminder"])
def test_discount_columns_match_brute_force(shop: Shop, action_id: str) -> None:
    for u in (3, 99):
        got = expected_revenue(shop, np.array([u]), window_hours=24.0)[0, ACTION_INDEX[action_id]]
        assert got == pytest.approx(_brute_force_revenue(shop, u, action_id, 24.0), rel=1e-9)


def test_window_scales_revenue_by_delay_cdf(shop: Shop) -> None:
    users = np.arange(50)
    full = expected_revenue(shop, users, window_hours=math.inf)
    np.testing.assert_allclose(expected_revenue(shop, users), full * (1 - math.exp(-72 / 10)))
    np.testing.assert_allclose(expected_revenue(shop, users, window_hours=10.0), full * (1 - math.exp(-1)))
    assert (expected_revenue(shop, users, window_hours=0.0) == 0).all()
    assert attribution_probability(shop) == pytest.approx(1 - math.exp(-7.2))


def test_net_value_subtracts_unit_cost(shop: Shop) -> None:
    users = np.arange(20)
    np.testing.assert_allclose(expected_net_value(shop, users), expected_revenue(shop, users) - UNIT_COSTS)
    assert UNIT_COSTS[ACTION_INDEX["loyalty_points"]] > UNIT_COSTS[ACTION_INDEX["push_reminder"]] > 0


def test_unknown_users_are_rejected(shop: Shop) -> None:
    with pytest.raises(ValueError, match="user_ids"):
        expected_revenue(shop, np.array([shop.n_users]))


def test_session_conversion_is_realistic(shop: Shop) -> None:
    p = conversion_probability(shop, np.arange(shop.n_users))
    assert 0.03 < p[:, 0].mean() < 0.15
    assert 0.03 < p.mean() < 0.15


def test_effects_are_heterogeneous_with_some_negative(shop: Shop) -> None:
    users = np.arange(shop.n_users)
    eff = action_effects(shop, users)
    sens = shop.price_sensitivity
    hi, lo = sens > np.quantile(sens, 0.8), sens < np.quantile(sens, 0.2)
    for action_id in ("pct10_sitewide", "pct20_sitewide"):
        col = eff[:, ACTION_INDEX[action_id]]
        assert col[hi].mean() > 0.5 and col[lo].mean() < 0.2
    push = eff[:, ACTION_INDEX["push_reminder"]]
    assert (push[shop.is_mobile] > 0.3).all() and (push[~shop.is_mobile] < -0.1).all()
    email = eff[:, ACTION_INDEX["email_digest"]]
    assert email[shop.activity < 0.4].mean() > 0.6 and email[shop.activity > 2.5].mean() < -0.2
    loyalty = eff[:, ACTION_INDEX["loyalty_points"]]
    top = shop.base_logit > np.quantile(shop.base_logit, 0.9)
    assert loyalty[top].mean() > 0.8 and loyalty.min() < 0
    cat1 = eff[:, ACTION_INDEX["cat1_pct15"]]
    assert cat1[shop.taste[:, 1] > 0.7].mean() > 0.6 and cat1[shop.taste[:, 1] < 0.05].mean() < 0.05
    fs = eff[:, ACTION_INDEX["free_shipping"]]
    cheap = shop.basket_value < np.quantile(shop.basket_value, 0.2)
    dear = shop.basket_value > np.quantile(shop.basket_value, 0.8)
    assert fs[cheap].mean() > 0.6 and fs[dear].mean() < 0.2
    assert eff.max() <= 1.3 and eff.min() >= -0.45


def test_best_action_differs_across_users_and_oracle_beats_constants(shop: Shop) -> None:
    net = expected_net_value(shop, np.arange(shop.n_users))
    best = net.argmax(axis=1)
    shares = np.bincount(best, minlength=net.shape[1]) / len(best)
    assert (shares > 0.01).sum() >= 4
    oracle = net.max(axis=1).mean()
    best_constant = net.mean(axis=0).max()
    assert oracle > best_constant * 1.1
    # the gain over the best constant is a sizeable fraction of the gain over doing nothing
    assert (oracle - best_constant) > 0.3 * (oracle - net[:, 0].mean())


@pytest.mark.parametrize("action_id", ACTION_IDS)
def test_sampled_sessions_match_the_closed_form(shop: Shop, action_id: str) -> None:
    """Monte-Carlo: 150k sampled sessions per action agree with the exact expectations."""
    rng = np.random.default_rng([17, ACTION_INDEX[action_id]])
    users = np.tile(np.arange(shop.n_users), 50)
    a = np.full(len(users), ACTION_INDEX[action_id])
    out = sample_session_outcomes(shop, rng, users, a)
    p = conversion_probability(shop, np.arange(shop.n_users))[:, ACTION_INDEX[action_id]][users]
    assert abs(out.converted.mean() - p.mean()) < 4 * math.sqrt((p * (1 - p)).sum()) / len(users)
    exp_rev = expected_revenue(shop, np.arange(shop.n_users), window_hours=math.inf)[:, ACTION_INDEX[action_id]]
    se = out.revenue.std() / math.sqrt(len(users))
    assert abs(out.revenue.mean() - exp_rev.mean()) < 4.5 * se + 0.005  # +0.005: revenue is rounded to cents
    assert (out.item_id[~out.converted] == -1).all() and (out.item_id[out.converted] >= 0).all()
    assert (out.delay_hours[out.converted] > 0).all()
    assert out.delay_hours[out.converted].mean() == pytest.approx(10.0, rel=0.1)
