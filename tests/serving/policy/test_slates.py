"""Diversity-penalised slates: exact picks, exact logged probabilities, and their agreement with sampling."""

import itertools
import math

import numpy as np
import pytest

from serving.policy.exploration import Exploration, action_probabilities, draw
from serving.policy.slates import Slate, draw_slate

GREEDY = Exploration(method="greedy")


def one_hot(kinds: list[str]) -> np.ndarray:
    """One row per candidate, one column per distinct kind (in order of first appearance)."""
    columns = list(dict.fromkeys(kinds))
    return np.array([[1.0 if kind == column else 0.0 for column in columns] for kind in kinds])


# 3 candidates, 0 and 1 of kind A, 2 of kind B; penalty 0.6, epsilon 0.3. By hand:
# slot 0: scores [1.0, 0.9, 0.5] → argmax 0 → [0.1 + 0.7, 0.1, 0.1]
# after 0: {1: 0.9 − 0.6 = 0.3, 2: 0.5} → argmax 2 → {1: 0.15, 2: 0.85}
# after 1: {0: 1.0 − 0.6 = 0.4, 2: 0.5} → argmax 2 → {0: 0.15, 2: 0.85}
# after 2: {0: 1.0, 1: 0.9} (kind B penalises neither) → argmax 0 → {0: 0.85, 1: 0.15}
HAND_SCORES = np.array([1.0, 0.9, 0.5])
HAND_ATTRIBUTES = one_hot(["A", "A", "B"])
HAND_PENALTY = 0.6
HAND_EXPLORATION = Exploration(epsilon=0.3)
HAND_SLATES = {  # ordered slate → (slot probabilities, adjusted scores)
    (0, 2): ([0.8, 0.85], [1.0, 0.5]),
    (0, 1): ([0.8, 0.15], [1.0, 0.9 - 0.6]),
    (1, 2): ([0.1, 0.85], [0.9, 0.5]),
    (1, 0): ([0.1, 0.15], [0.9, 1.0 - 0.6]),
    (2, 0): ([0.1, 0.85], [0.5, 1.0]),
    (2, 1): ([0.1, 0.15], [0.5, 0.9]),
}


def reference_slate_probabilities(
    scores: np.ndarray, attributes: np.ndarray, slate: tuple[int, ...], penalty: float, exploration: Exploration
) -> list[float]:
    """The slot probabilities of `slate`, recomputed candidate by candidate with plain loops (test oracle)."""
    chosen: list[int] = []
    slot_probabilities = []
    for pick in slate:
        pool = [i for i in range(len(scores)) if i not in chosen]
        adjusted = [
            scores[i] - penalty * sum(float(np.dot(attributes[i], attributes[c])) for c in chosen) for i in pool
        ]
        slot_probabilities.append(float(action_probabilities(np.array(adjusted), exploration)[pool.index(pick)]))
        chosen.append(pick)
    return slot_probabilities


def test_penalty_zero_and_greedy_is_the_top_by_score():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=50)
    attributes = one_hot(list(rng.choice(["email", "push", "coupon"], size=50)))
    slate = draw_slate(scores, attributes, 5, 0.0, GREEDY, rng)
    assert slate.indices == np.argsort(-scores, kind="stable")[:5].tolist()
    assert slate.probabilities == [1.0] * 5 and slate.slate_probability == 1.0
    assert slate.adjusted_scores == scores[slate.indices].tolist()


def test_greedy_ties_go_to_the_first_candidate():
    slate = draw_slate(np.array([1.0, 2.0, 1.0, 2.0]), np.zeros((4, 1)), 4, 0.0, GREEDY, np.random.default_rng(0))
    assert slate.indices == [1, 3, 0, 2]


def test_a_large_penalty_fills_one_slot_per_kind_before_repeating_a_kind():
    scores = np.array([5.0, 4.9, 4.8, 4.7, 3.0, 2.0])
    attributes = one_hot(["coupon", "coupon", "coupon", "coupon", "email", "push"])
    rng = np.random.default_rng(0)
    assert draw_slate(scores, attributes, 3, 0.0, GREEDY, rng).indices == [0, 1, 2]  # all coupons
    slate = draw_slate(scores, attributes, 4, 10.0, GREEDY, rng)
    assert slate.indices == [0, 4, 5, 1]
    assert slate.adjusted_scores == [5.0, 3.0, 2.0, 4.9 - 10.0]


def test_a_small_penalty_only_reorders_when_the_gap_is_smaller_than_it():
    scores = np.array([5.0, 4.9, 4.0])
    attributes = one_hot(["coupon", "coupon", "email"])
    assert draw_slate(scores, attributes, 2, 0.5, GREEDY, np.random.default_rng(0)).indices == [0, 1]
    assert draw_slate(scores, attributes, 2, 1.0, GREEDY, np.random.default_rng(0)).indices == [0, 2]


def test_penalty_scales_with_the_overlap_of_attributes():
    # candidate 1 shares two attributes with the first pick, candidate 2 one: penalties 2γ and γ
    scores = np.array([10.0, 5.0, 4.5])
    attributes = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    narrow = draw_slate(scores, attributes, 2, 0.4, GREEDY, np.random.default_rng(0))
    assert narrow.indices == [0, 1] and narrow.adjusted_scores == [10.0, 5.0 - 2 * 0.4]  # 4.2 beats 4.5 − 0.4
    wide = draw_slate(scores, attributes, 2, 0.6, GREEDY, np.random.default_rng(0))
    assert wide.indices == [0, 2] and wide.adjusted_scores == [10.0, 4.5 - 0.6]  # 3.9 beats 5.0 − 1.2


def test_logged_probabilities_equal_the_hand_computation():
    rng = np.random.default_rng(17)
    seen = set()
    for _ in range(300):
        slate = draw_slate(HAND_SCORES, HAND_ATTRIBUTES, 2, HAND_PENALTY, HAND_EXPLORATION, rng)
        key = tuple(slate.indices)
        probabilities, adjusted_scores = HAND_SLATES[key]
        assert slate.probabilities == pytest.approx(probabilities, abs=1e-15)
        assert slate.adjusted_scores == pytest.approx(adjusted_scores, abs=1e-15)
        assert slate.slate_probability == math.prod(slate.probabilities)
        seen.add(key)
    assert seen == set(HAND_SLATES)


def test_hand_slate_probabilities_sum_to_one():
    assert sum(math.prod(p) for p, _ in HAND_SLATES.values()) == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize(
    "exploration",
    [Exploration(epsilon=0.4), Exploration(method="softmax", temperature=0.7, floor=0.05)],
)
def test_logged_probabilities_match_a_loop_by_loop_reference(exploration):
    rng = np.random.default_rng(8)
    scores = rng.normal(size=12)
    attributes = np.hstack([one_hot(list(rng.choice(["a", "b", "c"], size=12))), rng.uniform(0, 1, size=(12, 2))])
    for _ in range(50):
        slate = draw_slate(scores, attributes, 4, 0.8, exploration, rng)
        expected = reference_slate_probabilities(scores, attributes, tuple(slate.indices), 0.8, exploration)
        assert slate.probabilities == pytest.approx(expected, rel=1e-12)
        assert slate.slate_probability == math.prod(slate.probabilities)


def test_empirical_frequency_of_each_ordered_slate_matches_its_probability():
    scores = np.array([0.4, 0.3, 0.1, -0.2])
    attributes = one_hot(["email", "email", "push", "push"])
    exploration = Exploration(method="softmax", temperature=0.3, floor=0.02)
    every_slate = list(itertools.permutations(range(4), 2))
    probability = {
        slate: math.prod(reference_slate_probabilities(scores, attributes, slate, 0.5, exploration))
        for slate in every_slate
    }
    assert sum(probability.values()) == pytest.approx(1.0, abs=1e-12)

    rng = np.random.default_rng(99)
    n = 20_000
    counts = dict.fromkeys(every_slate, 0)
    logged = {}
    for _ in range(n):
        slate = draw_slate(scores, attributes, 2, 0.5, exploration, rng)
        counts[tuple(slate.indices)] += 1
        logged[tuple(slate.indices)] = slate.slate_probability
    assert logged == pytest.approx(probability, rel=1e-12)  # every slate was drawn and logged its exact probability
    for slate, p in probability.items():
        assert abs(counts[slate] / n - p) <= 4 * math.sqrt(p * (1 - p) / n), slate


@pytest.mark.parametrize(
    "exploration",
    [GREEDY, Exploration(epsilon=0.5), Exploration(method="softmax", temperature=0.2, floor=0.1)],
)
def test_a_slate_of_one_is_exactly_action_probabilities_then_draw(exploration):
    scores = np.array([0.3, 0.5, 0.1, 0.5, -0.4])
    attributes = one_hot(["a", "b", "a", "b", "c"])
    for seed in range(40):
        rng, twin = np.random.default_rng(seed), np.random.default_rng(seed)
        slate = draw_slate(scores, attributes, 1, 3.0, exploration, rng)
        probabilities = action_probabilities(scores, exploration)
        pick = draw(probabilities, twin)
        assert slate == Slate(
            [pick], [float(probabilities[pick])], float(probabilities[pick]), [float(scores[pick])],
            probabilities.tolist(), [probabilities.tolist()],
        )
        assert rng.bit_generator.state == twin.bit_generator.state


def test_each_slot_logs_its_distribution_over_all_candidates_given_the_slots_before():
    scores = np.array([0.3, 0.5, 0.1, 0.5, -0.4])
    attributes = one_hot(["a", "b", "a", "b", "c"])
    exploration = Exploration(method="softmax", temperature=0.2, floor=0.05)
    slate = draw_slate(scores, attributes, 3, 0.25, exploration, np.random.default_rng(11))
    assert len(slate.slot_distributions) == 3 and slate.slot_distributions[0] == slate.first_slot
    taken: list[int] = []
    overlap = np.zeros(5)
    for slot, (pick, distribution) in enumerate(zip(slate.indices, slate.slot_distributions)):
        remaining = [i for i in range(5) if i not in taken]
        expected = np.zeros(5)
        expected[remaining] = action_probabilities(scores[remaining] - 0.25 * overlap[remaining], exploration)
        assert distribution == pytest.approx(expected.tolist(), abs=1e-15)
        assert [distribution[i] for i in taken] == [0.0] * slot  # a chosen candidate cannot be drawn again
        assert distribution[pick] == slate.probabilities[slot] and sum(distribution) == pytest.approx(1.0, abs=1e-12)
        taken.append(pick)
        overlap += attributes @ attributes[pick]


def test_each_slot_spends_exactly_one_uniform():
    rng, twin = np.random.default_rng(4), np.random.default_rng(4)
    draw_slate(np.array([0.1, 0.2, 0.3, 0.4]), np.eye(4), 3, 0.1, Exploration(), rng)
    twin.random(3)
    assert rng.bit_generator.state == twin.bit_generator.state


def test_size_is_clipped_to_the_number_of_candidates():
    rng = np.random.default_rng(6)
    for _ in range(20):
        slate = draw_slate(HAND_SCORES, HAND_ATTRIBUTES, 10, HAND_PENALTY, HAND_EXPLORATION, rng)
        assert sorted(slate.indices) == [0, 1, 2]
        assert slate.probabilities[-1] == 1.0  # the last candidate left is certain
        assert slate.slate_probability == pytest.approx(math.prod(HAND_SLATES[tuple(slate.indices[:2])][0]), abs=1e-15)


def test_inputs_are_not_modified():
    scores, attributes = HAND_SCORES.copy(), HAND_ATTRIBUTES.copy()
    draw_slate(scores, attributes, 3, HAND_PENALTY, HAND_EXPLORATION, np.random.default_rng(0))
    assert np.array_equal(scores, HAND_SCORES) and np.array_equal(attributes, HAND_ATTRIBUTES)


@pytest.mark.parametrize(
    ("scores", "attributes", "size", "penalty", "message"),
    [
        (HAND_SCORES, HAND_ATTRIBUTES, 0, 0.5, "slate size must be at least 1; got 0"),
        (HAND_SCORES, HAND_ATTRIBUTES, -2, 0.5, "slate size must be at least 1; got -2"),
        (HAND_SCORES, HAND_ATTRIBUTES, 2, -0.1, r"penalty must be finite and >= 0 .*got -0.1"),
        (HAND_SCORES, HAND_ATTRIBUTES, 2, math.nan, r"penalty must be finite and >= 0"),
        (HAND_SCORES, HAND_ATTRIBUTES, 2, math.inf, r"penalty must be finite and >= 0"),
        (HAND_SCORES, np.ones(3), 2, 0.5, r"\(K, d\) array, one row per candidate \(K = 3\); got shape \(3,\)"),
        (HAND_SCORES, np.ones((4, 2)), 2, 0.5, r"\(K = 3\); got shape \(4, 2\)"),
        (HAND_SCORES, np.array([[0.0], [math.nan], [math.inf]]), 2, 0.5, r"attributes must be finite; rows \[1, 2\]"),
        (np.array([0.1, math.nan, 0.2]), HAND_ATTRIBUTES, 2, 0.5, r"NaN at positions \[1\]"),
        (np.array([]), np.zeros((0, 2)), 2, 0.5, "no eligible action"),
        (np.array([1.0, 0.0]), np.array([[1e200], [1e200]]), 2, 1e300, "penalised scores overflowed at slot 1"),
    ],
)
def test_bad_inputs_are_refused_saying_what_is_wrong(scores, attributes, size, penalty, message):
    with pytest.raises(ValueError, match=message):
        draw_slate(scores, attributes, size, penalty, GREEDY, np.random.default_rng(0))


def test_huge_attributes_are_harmless_without_a_penalty():
    slate = draw_slate(np.array([1.0, 0.0]), np.array([[1e200], [1e200]]), 2, 0.0, GREEDY, np.random.default_rng(0))
    assert slate.indices == [0, 1] and slate.adjusted_scores == [1.0, 0.0]


def test_a_fractional_size_is_a_type_error():
    with pytest.raises(TypeError):
        draw_slate(HAND_SCORES, HAND_ATTRIBUTES, 2.5, 0.5, GREEDY, np.random.default_rng(0))


def test_first_slot_distribution_is_that_of_the_unpenalised_scores_for_any_slate_size():
    scores = np.array([0.3, 0.5, 0.1, 0.5, -0.4])
    exploration = Exploration(method="softmax", temperature=0.2, floor=0.05)
    slate = draw_slate(scores, one_hot(["a", "b", "a", "b", "c"]), 3, 3.0, exploration, np.random.default_rng(1))
    assert slate.first_slot == action_probabilities(scores, exploration).tolist()
    assert slate.first_slot[slate.indices[0]] == slate.probabilities[0]
