from __future__ import annotations

import numpy as np
import pytest

from simulator import ACTION_IDS, Shop, ShopConfig, build_shop, policy_value
from simulator.evaluation import oracle_actions
from simulator.response import expected_net_value, expected_revenue

METRICS = {
    "revenue_per_user",
    "net_value_per_user",
    "incremental_revenue_per_user",
    "incremental_net_value_per_user",
}


@pytest.fixture(scope="module")
def shop() -> Shop:
    return build_shop(ShopConfig(n_users=2_000, n_items=150, seed=8))


@pytest.fixture(scope="module")
def users(shop: Shop) -> np.ndarray:
    return np.arange(shop.n_users)


def test_result_structure_and_reference_policies(shop: Shop, users: np.ndarray) -> None:
    chosen = np.array(ACTION_IDS, dtype=object)[users % len(ACTION_IDS)]
    result = policy_value(shop, users, chosen)
    assert set(result) == {"policy", "no_action", "random", "random_promotion", "oracle"}
    assert all(set(v) == METRICS for v in result.values())
    rev, net = expected_revenue(shop, users), expected_net_value(shop, users)
    assert result["no_action"]["revenue_per_user"] == pytest.approx(rev[:, 0].mean())
    assert result["no_action"]["incremental_revenue_per_user"] == 0.0
    assert result["random"]["net_value_per_user"] == pytest.approx(net.mean())
    assert result["random_promotion"]["net_value_per_user"] == pytest.approx(net[:, 1:].mean())
    assert result["oracle"]["net_value_per_user"] == pytest.approx(net.max(axis=1).mean())
    policy = rev[users, users % len(ACTION_IDS)].mean()
    assert result["policy"]["revenue_per_user"] == pytest.approx(policy)
    assert result["policy"]["incremental_revenue_per_user"] == pytest.approx(policy - rev[:, 0].mean())


def test_oracle_is_at_least_as_good_as_any_policy(shop: Shop, users: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    oracle = policy_value(shop, users, oracle_actions(shop, users))
    best = oracle["policy"]["net_value_per_user"]
    assert best == pytest.approx(oracle["oracle"]["net_value_per_user"])
    candidates = [np.full(len(users), a, dtype=object) for a in ACTION_IDS]
    candidates += [rng.choice(np.array(ACTION_IDS, dtype=object), size=len(users)) for _ in range(5)]
    for chosen in candidates:
        value = policy_value(shop, users, chosen)
        assert value["oracle"]["net_value_per_user"] >= value["policy"]["net_value_per_user"]
        assert value["oracle"]["net_value_per_user"] > value["policy"]["net_value_per_user"] + 0.05
    assert oracle["oracle"]["incremental_net_value_per_user"] > 3 * oracle["random"]["incremental_net_value_per_user"] > 0


def test_unknown_action_ids_are_named(shop: Shop) -> None:
    with pytest.raises(ValueError, match="bogus_action"):
        policy_value(shop, np.array([0, 1]), ["no_action", "bogus_action"])


def test_length_mismatch_is_rejected(shop: Shop) -> None:
    with pytest.raises(ValueError, match="length"):
        policy_value(shop, np.array([0, 1, 2]), ["no_action"])


def test_window_is_passed_through(shop: Shop, users: np.ndarray) -> None:
    chosen = np.full(len(users), "pct10_sitewide", dtype=object)
    short = policy_value(shop, users, chosen, window_hours=1.0)
    long = policy_value(shop, users, chosen)
    assert short["policy"]["revenue_per_user"] < 0.2 * long["policy"]["revenue_per_user"]
