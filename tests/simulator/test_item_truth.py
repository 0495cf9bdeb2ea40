"""Item recommendation ground truth: the closed form equals the model it states, an empty slate is worth 0, the
oracle is the best slate (brute force over a small catalogue), and bad slates are refused."""

import itertools

import numpy as np
import pytest

from simulator import ShopConfig, build_shop
from simulator.choice import choice_probabilities
from simulator.item_truth import (
    ITEM_EXPOSURE_LIFT, NO_ITEM, examination, item_slate_values, oracle_item_slates,
)
from simulator.response import attribution_probabilities, expected_revenue


@pytest.fixture(scope="module")
def small_shop():
    """40 users, 7 items over 4 categories: every slate of up to 3 items can be enumerated."""
    return build_shop(ShopConfig(n_users=40, n_items=7, n_categories=4, n_days=2, seed=11))


def direct_value(shop, user: int, slate: list[int], lift: float = ITEM_EXPOSURE_LIFT) -> float:
    """The model as the README states it, step by step: raised weights, the logsum logit, the raised choice."""
    w = choice_probabilities(shop.price_sensitivity[[user]], shop.taste[[user]], shop.item_category,
                             shop.item_price)[0]  # ∝ w_ui: the ratio W_S / W_u does not depend on the scale
    raised = w.copy()
    for j, item in enumerate(slate):
        raised[item] *= 1.0 + lift / np.log2(j + 2)
    in_window = attribution_probabilities(shop)[0]

    def revenue(weights: np.ndarray) -> float:
        p = 1.0 / (1.0 + np.exp(-(shop.base_logit[user] + np.log(weights.sum() / w.sum()))))
        return p * float((weights / weights.sum()) @ shop.item_price) * in_window

    return revenue(raised) - revenue(w)


def test_examination_is_the_dcg_discount():
    np.testing.assert_allclose(examination(4), [1.0, 1 / np.log2(3), 0.5, 1 / np.log2(5)])


def test_closed_form_equals_the_stated_model(small_shop):
    users = np.arange(12)
    rng = np.random.default_rng(0)
    slates = np.array([rng.permutation(7)[:3] for _ in users])
    slates[3, 2] = NO_ITEM
    values = item_slate_values(small_shop, users, slates)
    for user, slate, value in zip(users, slates, values):
        assert value == pytest.approx(direct_value(small_shop, user, [i for i in slate if i != NO_ITEM]), rel=1e-10)


def test_an_empty_slate_is_worth_exactly_zero_and_organic_revenue_is_the_no_action_truth(small_shop):
    users = np.arange(40)
    assert np.all(item_slate_values(small_shop, users, np.full((40, 5), NO_ITEM)) == 0.0)
    # The empty slate's revenue is the shop's no_action revenue (the closed form's second term): same world.
    x = np.exp(small_shop.base_logit)
    r0 = choice_probabilities(small_shop.price_sensitivity, small_shop.taste, small_shop.item_category,
                              small_shop.item_price) @ small_shop.item_price
    np.testing.assert_allclose(x * r0 / (1 + x) * attribution_probabilities(small_shop)[0],
                               expected_revenue(small_shop, users)[:, 0], rtol=1e-12)


def test_the_oracle_slate_is_the_best_of_every_slate_of_at_most_its_size(small_shop):
    users = np.arange(40)
    slates, values = oracle_item_slates(small_shop, users, 3)
    best = np.zeros(40)  # the empty slate
    for n in (1, 2, 3):
        for slate in itertools.permutations(range(7), n):
            padded = np.full((40, 3), NO_ITEM)
            padded[:, :n] = slate
            best = np.maximum(best, item_slate_values(small_shop, users, padded))
    np.testing.assert_allclose(values, best, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(values, item_slate_values(small_shop, users, slates))
    assert np.all(values >= 0.0)


def test_one_item_adds_value_exactly_when_its_price_exceeds_the_organic_revenue_per_session(small_shop):
    """V({i}) > 0 ⟺ price_i > p0·R0 (the ratio (R0 + B)/(c + A) against R0/c, with B/A = price_i)."""
    users = np.arange(40)
    x = np.exp(small_shop.base_logit)
    r0 = choice_probabilities(small_shop.price_sensitivity, small_shop.taste, small_shop.item_category,
                              small_shop.item_price) @ small_shop.item_price
    threshold = x * r0 / (1 + x)
    for item in range(7):
        value = item_slate_values(small_shop, users, np.full((40, 1), item))
        np.testing.assert_array_equal(value > 0, small_shop.item_price[item] > threshold)
    assert item_slate_values(small_shop, [0], [[0]], lift=0.0)[0] == 0.0  # no exposure effect, no value


def test_bad_slates_are_refused(small_shop):
    with pytest.raises(ValueError, match="repeats an item"):
        item_slate_values(small_shop, [0], [[1, 1]])
    with pytest.raises(ValueError, match=r"slate items must lie in \[0, 7\)"):
        item_slate_values(small_shop, [0], [[7]])
    with pytest.raises(ValueError, match="one row per user"):
        item_slate_values(small_shop, [0, 1], [[1]])
    with pytest.raises(ValueError, match="size must be >= 1"):
        oracle_item_slates(small_shop, [0], 0)
