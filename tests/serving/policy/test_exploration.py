"""Exact probabilities of each exploration method, their invariants, and the exactness of `draw`."""

import math
import warnings

import numpy as np
import pytest

from serving.policy.exploration import Exploration, action_probabilities, draw, flagged_positions

LN2 = math.log(2.0)


class FixedUniform:
    """An rng whose `random()` returns a chosen value: the only way to hit the rounding edge of `draw` on purpose."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_defaults_are_epsilon_greedy_with_five_percent():
    assert Exploration() == Exploration(method="epsilon_greedy", epsilon=0.05, temperature=1.0, floor=0.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "ucb"}, r"method must be one of \('greedy', 'epsilon_greedy', 'softmax', 'thompson'\); got 'ucb'"),
        ({"epsilon": -0.1}, r"epsilon must be in \[0, 1\] .*got -0.1"),
        ({"epsilon": 1.5}, r"epsilon must be in \[0, 1\] .*got 1.5"),
        ({"epsilon": math.nan}, r"epsilon must be in \[0, 1\]"),
        ({"temperature": 0.0}, r"temperature must be finite and > 0 .*got 0.0"),
        ({"temperature": -1.0}, r"temperature must be finite and > 0"),
        ({"temperature": math.inf}, r"temperature must be finite and > 0"),
        ({"temperature": math.nan}, r"temperature must be finite and > 0"),
        ({"floor": -0.01}, r"floor must be in \[0, 1\) .*got -0.01"),
        ({"floor": 1.0}, r"floor must be in \[0, 1\) .*got 1.0"),
    ],
)
def test_out_of_range_settings_are_refused_with_the_valid_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Exploration(**kwargs)


def test_edge_settings_are_accepted():
    Exploration(epsilon=0.0)
    Exploration(epsilon=1.0)
    Exploration(method="softmax", temperature=1e-9, floor=0.999)


def test_greedy_puts_all_mass_on_the_first_maximum():
    greedy = Exploration(method="greedy")
    assert action_probabilities(np.array([1.0, 3.0, 2.0]), greedy).tolist() == [0.0, 1.0, 0.0]
    assert action_probabilities(np.array([3.0, 1.0, 3.0]), greedy).tolist() == [1.0, 0.0, 0.0]


def test_epsilon_greedy_gives_epsilon_over_k_plus_the_rest_to_the_first_maximum():
    probabilities = action_probabilities(np.array([1.0, 3.0, 2.0]), Exploration(epsilon=0.3))
    assert probabilities == pytest.approx([0.1, 0.8, 0.1], abs=1e-15)
    tied = action_probabilities(np.array([-1.0, 5.0, 5.0, 0.0]), Exploration(epsilon=0.2))
    assert tied == pytest.approx([0.05, 0.85, 0.05, 0.05], abs=1e-15)


def test_epsilon_zero_is_greedy_and_epsilon_one_is_uniform():
    scores = np.array([0.2, -1.0, 0.7, 0.7])
    assert action_probabilities(scores, Exploration(epsilon=0.0)).tolist() == [0.0, 0.0, 1.0, 0.0]
    assert action_probabilities(scores, Exploration(epsilon=1.0)).tolist() == [0.25] * 4


def test_softmax_is_proportional_to_exp_score_over_temperature():
    softmax = Exploration(method="softmax")
    expected = [1 / 7, 2 / 7, 4 / 7]
    assert action_probabilities(np.array([0.0, LN2, 2 * LN2]), softmax) == pytest.approx(expected, rel=1e-12)
    # doubling the temperature halves the gaps: the same distribution from doubled scores
    hotter = Exploration(method="softmax", temperature=2.0)
    assert action_probabilities(np.array([0.0, 2 * LN2, 4 * LN2]), hotter) == pytest.approx(expected, rel=1e-12)


def test_softmax_is_unchanged_by_adding_a_constant_to_every_score():
    softmax = Exploration(method="softmax", temperature=0.5, floor=0.05)
    scores = np.array([0.3, -0.2, 1.1, 0.0])
    shifted = action_probabilities(scores + 1000.0, softmax)
    assert shifted == pytest.approx(action_probabilities(scores, softmax), abs=1e-12)


def test_softmax_floor_mixes_uniform_mass_in():
    floored = Exploration(method="softmax", floor=0.1)
    # p = f + (1 − K·f)·softmax = 0.1 + 0.7·[1, 2, 4]/7
    assert action_probabilities(np.array([0.0, LN2, 2 * LN2]), floored) == pytest.approx([0.2, 0.3, 0.5], rel=1e-12)


@pytest.mark.parametrize(("floor", "k"), [(0.5, 3), (0.5, 2), (0.34, 3), (0.9, 1), (0.25, 4)])
def test_a_floor_too_large_for_k_degrades_to_uniform(floor, k):
    scores = np.linspace(-3.0, 5.0, k)
    probabilities = action_probabilities(scores, Exploration(method="softmax", floor=floor))
    assert probabilities.tolist() == [1.0 / k] * k


def test_a_floor_just_under_one_over_k_is_not_uniform():
    probabilities = action_probabilities(np.array([0.0, 10.0]), Exploration(method="softmax", floor=0.4))
    assert probabilities[0] == pytest.approx(0.4 + 0.2 / (1 + math.exp(10.0)), rel=1e-12)
    assert probabilities[1] > 0.5


@pytest.mark.parametrize(
    ("scores", "temperature", "expected"),
    [
        ([1e6, -1e6, 0.0], 1.0, [1.0, 0.0, 0.0]),
        ([1e6, 1e6], 1.0, [0.5, 0.5]),
        ([-1e6, -1e6], 1.0, [0.5, 0.5]),
        ([1e308, -1e308], 1.0, [1.0, 0.0]),
        ([-1e308, 1e308, -1e308], 1e-300, [0.0, 1.0, 0.0]),
        ([0.0, 1.0], 1e-300, [0.0, 1.0]),
    ],
)
def test_softmax_stays_finite_for_extreme_scores_and_temperatures(scores, temperature, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or invalid-value warning may escape
        probabilities = action_probabilities(np.array(scores), Exploration(method="softmax", temperature=temperature))
    assert np.isfinite(probabilities).all()
    assert probabilities == pytest.approx(expected, abs=1e-12)


def test_softmax_of_huge_negative_scores_matches_the_shifted_scores():
    softmax = Exploration(method="softmax")
    assert action_probabilities(np.array([-1e6, -1e6 + 1.0]), softmax) == pytest.approx(
        [1 / (1 + math.e), math.e / (1 + math.e)], rel=1e-12
    )


@pytest.mark.parametrize(
    "exploration",
    [
        Exploration(method="greedy"),
        Exploration(epsilon=0.0),
        Exploration(epsilon=0.37),
        Exploration(epsilon=1.0),
        Exploration(method="softmax", temperature=0.01),
        Exploration(method="softmax", temperature=3.0, floor=0.02),
        Exploration(method="softmax", temperature=0.2, floor=0.9),
    ],
)
def test_probabilities_are_a_distribution_that_respects_the_floor_and_the_ranking(exploration):
    rng = np.random.default_rng(7)
    for k in (1, 2, 3, 7, 50):
        scores = rng.normal(0.0, 2.0, size=k)
        probabilities = action_probabilities(scores, exploration)
        assert probabilities.shape == (k,)
        assert abs(probabilities.sum() - 1.0) <= 1e-12
        assert (probabilities >= 0.0).all()
        assert (probabilities >= min(exploration.floor, 1.0 / k) - 1e-15).all()
        order = np.argsort(scores)
        assert (np.diff(probabilities[order]) >= -1e-15).all()  # a higher score never gets less probability


def test_scores_are_read_not_modified_and_lists_are_accepted():
    scores = np.array([0.5, 0.1])
    action_probabilities(scores, Exploration(method="softmax"))
    assert scores.tolist() == [0.5, 0.1]
    assert action_probabilities([0.5, 0.1], Exploration(method="greedy")).tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        (np.array([]), "scores is empty: no eligible action"),
        (np.array([0.1, math.nan, 0.3, math.nan]), r"NaN at positions \[1, 3\], infinite at positions \[\]"),
        (np.array([math.inf, 0.0, -math.inf]), r"NaN at positions \[\], infinite at positions \[0, 2\]"),
        (np.zeros((2, 2)), r"scores must be 1-D, one score per eligible action; got shape \(2, 2\)"),
    ],
)
def test_unusable_scores_are_refused_naming_what_is_wrong(scores, message):
    for exploration in (Exploration(method="greedy"), Exploration(), Exploration(method="softmax")):
        with pytest.raises(ValueError, match=message):
            action_probabilities(scores, exploration)


def test_flagged_positions_lists_ten_then_counts():
    assert flagged_positions(np.array([False, True, True])) == "[1, 2]"
    assert flagged_positions(np.ones(12, dtype=bool)) == "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9] … (12 in all)"
    assert flagged_positions(np.array([[False, True], [False, False]])) == "[(0, 1)]"


def test_draw_frequencies_match_the_probabilities():
    probabilities = np.array([0.1, 0.0, 0.25, 0.65, 1e-3])
    probabilities /= probabilities.sum()
    rng = np.random.default_rng(2024)
    n = 100_000
    counts = np.bincount([draw(probabilities, rng) for _ in range(n)], minlength=probabilities.size)
    assert counts[1] == 0
    standard_errors = np.sqrt(probabilities * (1 - probabilities) / n)
    assert (np.abs(counts / n - probabilities) <= 4 * standard_errors).all()


def test_draw_of_policy_probabilities_matches_them():
    probabilities = action_probabilities(np.array([0.2, 0.9, -0.4]), Exploration(method="softmax", temperature=0.5))
    rng = np.random.default_rng(11)
    n = 60_000
    counts = np.bincount([draw(probabilities, rng) for _ in range(n)], minlength=3)
    assert (np.abs(counts / n - probabilities) <= 4 * np.sqrt(probabilities * (1 - probabilities) / n)).all()


def test_draw_spends_exactly_one_uniform():
    rng, twin = np.random.default_rng(5), np.random.default_rng(5)
    draw(np.array([0.2, 0.3, 0.5]), rng)
    twin.random()
    assert rng.bit_generator.state == twin.bit_generator.state


def test_draw_locates_the_uniform_in_the_cumulative_sum():
    probabilities = np.array([0.25, 0.0, 0.5, 0.25])
    assert draw(probabilities, FixedUniform(0.0)) == 0
    assert draw(probabilities, FixedUniform(0.2499)) == 0
    assert draw(probabilities, FixedUniform(0.25)) == 2  # never the zero-probability bucket at the boundary
    assert draw(probabilities, FixedUniform(0.75)) == 3


def test_draw_gives_a_uniform_past_a_rounded_down_total_to_the_last_drawable_action():
    almost_one = 1.0 - 2.0**-53  # the largest value Generator.random() can return
    probabilities = np.array([0.3, 0.7 - 1e-12, 0.0, 0.0])
    assert draw(probabilities, FixedUniform(almost_one)) == 1
    assert draw(np.array([0.0, 0.0, 1.0 - 1e-12]), FixedUniform(almost_one)) == 2


def test_draw_of_a_certain_action_always_returns_it():
    rng = np.random.default_rng(0)
    assert {draw(np.array([0.0, 0.0, 1.0]), rng) for _ in range(200)} == {2}
    assert {draw(np.array([1.0]), rng) for _ in range(20)} == {0}


@pytest.mark.parametrize(
    ("probabilities", "message"),
    [
        (np.array([]), r"non-empty 1-D array; got shape \(0,\)"),
        (np.array([[0.5, 0.5]]), r"non-empty 1-D array; got shape \(1, 2\)"),
        (np.array([0.6, -0.1, 0.5]), r"finite and >= 0; not so at positions \[1\]"),
        (np.array([0.5, math.nan, 0.5]), r"finite and >= 0; not so at positions \[1\]"),
        (np.array([0.5, 0.6]), r"must sum to 1 \(within 1e-09\); they sum to 1.1"),
    ],
)
def test_draw_refuses_what_is_not_a_distribution(probabilities, message):
    with pytest.raises(ValueError, match=message):
        draw(probabilities, np.random.default_rng(0))
