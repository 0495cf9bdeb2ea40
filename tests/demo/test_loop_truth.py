"""The loop's ground truth: constrained assignments under daily budgets, exploration, the reference policies."""

import itertools

import numpy as np
import pytest

from demo.loop_truth import (
    Value, budget_counts, candidate_mask, constrained_choice, explored, policy_value, round_values,
)
from serving.policy.exploration import Exploration
from simulator import ShopConfig, build_shop
from simulator.actions import ACTION_IDS, ACTION_INDEX

A, B, C = 0, 1, 2


def test_without_a_binding_budget_each_decision_takes_its_best_candidate():
    scores = np.array([[0.0, 2.0, 1.0], [0.0, 0.5, 3.0]])
    mask = np.array([[True, True, True], [True, False, True]])
    x = constrained_choice(scores, mask, {B: 5})
    assert x.tolist() == [[0, 1, 0], [0, 0, 1]]


def test_a_binding_budget_gives_its_slots_where_they_gain_most_as_brute_force_does():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(7, 3))
    scores[:, A] = 0.0
    mask = np.ones_like(scores, dtype=bool)
    x = constrained_choice(scores, mask, {B: 2, C: 1})
    assert np.allclose(x.sum(axis=1), 1) and x[:, B].sum() <= 2 + 1e-9 and x[:, C].sum() <= 1 + 1e-9
    best = max(
        sum(scores[i, a] for i, a in enumerate(assign))
        for assign in itertools.product(range(3), repeat=7)
        if assign.count(B) <= 2 and assign.count(C) <= 1
    )
    assert (x * scores).sum() == pytest.approx(best)  # the LP's optimum is the integral one here


def test_exploration_mixes_the_choice_with_the_uniform_over_candidates():
    v = np.array([[0.0, 1.0, 3.0]])
    mask = np.array([[True, True, False]])
    x = np.array([[0.0, 1.0, 0.0]])
    assert explored(v, x, mask, 0.2).tolist() == [pytest.approx(0.8 * 1.0 + 0.2 * 0.5)]


def test_a_softmax_policy_is_valued_by_its_probabilities_over_the_candidates():
    v = np.array([[0.0, 1.0, 3.0], [0.0, 2.0, 0.5]])
    scores = np.array([[0.0, 0.2, 0.1], [0.0, 0.0, 0.0]])
    mask = np.array([[True, True, False], [True, True, True]])
    softmax = Exploration(method="softmax", temperature=0.1)
    p0 = np.exp(np.array([0.0, 0.2]) / 0.1) / np.exp(np.array([0.0, 0.2]) / 0.1).sum()
    # row 0: action C is not a candidate, so its value 3.0 cannot count; row 1: equal scores, uniform over three
    assert policy_value(v, scores, mask, {}, softmax).tolist() == [pytest.approx(p0 @ [0.0, 1.0]),
                                                                   pytest.approx(2.5 / 3)]
    # epsilon-greedy keeps the budget-constrained assignment
    greedy = policy_value(v, scores, mask, {}, Exploration(epsilon=0.3))
    assert greedy.tolist() == [pytest.approx(0.7 * 1.0 + 0.3 * 0.5), pytest.approx(0.7 * 0.0 + 0.3 * 2.5 / 3)]
    with pytest.raises(ValueError, match="thompson"):
        policy_value(v, scores, mask, {}, Exploration(method="thompson"))


def test_budgets_become_counts_per_action():
    budgets = [{"daily_budget": 500.0, "costs": {"free_shipping": 0.25}}, {"daily_budget": 3.0, "costs": {"email_digest": 0.0}}]
    assert budget_counts(budgets) == {ACTION_INDEX["free_shipping"]: 2000}


def test_reference_policies_on_a_real_shop_keep_their_order():
    shop = build_shop(ShopConfig(n_users=300, n_items=40, n_days=2, seed=2))
    users = shop.users["user_id"].to_numpy()[:200]
    candidates = [list(ACTION_IDS)] * 150 + [["no_action"]] * 50
    values = round_values(shop, users, ["no_action"] * 200, candidates, Exploration(epsilon=0.05), [],
                          "loyalty_points", {})
    assert values["no_action"] == Value(0.0, 0.0, 0.0) and values["policy"].mean == 0.0
    assert values["oracle_unconstrained"].mean >= values["oracle"].mean >= values["best_single_action"].mean
    assert values["oracle"].mean > values["random_promotion"].mean
    mask = candidate_mask(candidates)
    assert mask[:150].all() and mask[150:].sum() == 50 and mask[150:, ACTION_INDEX["no_action"]].all()
