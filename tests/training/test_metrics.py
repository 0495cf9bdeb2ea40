"""Metric values checked against small examples computed by hand (see the comments for the arithmetic)."""

import numpy as np
import pytest

from training.metrics import multi_action_qini, perfect_qini_curve, qini_coefficient, qini_curve, uplift_at_k

Y = np.array([1.0, 0.0, 1.0, 0.0])
T = np.array([1, 1, 0, 0])
U = np.array([0.9, 0.5, 0.3, 0.1])


def test_qini_curve_by_hand():
    # top1: no control yet → 0; top2: still none → 0; top3: 1 − 1·2/1 = −1; top4: 1 − 1·2/2 = 0
    x, q = qini_curve(Y, U, T)
    np.testing.assert_array_equal(x, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(q, [0, 0, 0, -1, 0])


def test_ties_are_grouped_into_one_point():
    x, q = qini_curve(Y, np.array([0.5, 0.5, 0.1, 0.1]), T)
    np.testing.assert_array_equal(x, [0, 2, 4])
    np.testing.assert_array_equal(q, [0, 0, 0])


def test_perfect_curve_by_hand():
    # scores y·t − y·(1−t) = [1, 0, −1, 0] → order [0, 3, 1, 2], ties {3, 1} grouped: points at 1, 3, 4
    x, q = perfect_qini_curve(Y, T)
    np.testing.assert_array_equal(x, [0, 1, 3, 4])
    np.testing.assert_array_equal(q, [0, 0, 1, 0])


def test_qini_coefficient_by_hand():
    # AUC model = −1, AUC perfect = 1.5, random line from (0,0) to (4,0) = 0 → −1 / 1.5
    assert qini_coefficient(Y, U, T) == pytest.approx(-2 / 3)


def test_perfect_ranking_scores_one_and_reversed_scores_below_zero():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 2, 400)
    y = rng.random(400)
    score = y * t - y * (1 - t)
    assert qini_coefficient(y, score, t) == pytest.approx(1.0)
    assert qini_coefficient(y, -score, t) < 0


def test_uplift_at_k_by_hand():
    # top 3 rows: treated {0, 1} mean 0.5, control {2} mean 1 → −0.5
    assert uplift_at_k(Y, U, T, k=0.75) == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="top 50% holds no control rows"):
        uplift_at_k(Y, U, T, k=0.5)


def test_multi_action_qini_scores_each_arm_against_control():
    y = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    actions = np.array(["a", "a", "no_action", "no_action", "b", "b"])
    uplift = np.array([[0.9, 0], [0.5, 0], [0.3, 0.3], [0.1, 0.1], [0, 0.9], [0, 0.5]])
    scores = multi_action_qini(y, actions, uplift, ["a", "b"], "no_action")
    assert scores["a"] == pytest.approx(-2 / 3) and scores["b"] == pytest.approx(-2 / 3)
    assert scores["mean"] == pytest.approx(-2 / 3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((Y, U[:3], T), "lengths differ: 4, 3, 4"),
        ((Y, U, np.array([1, 2, 0, 0])), "treatment must be 0"),
        ((np.zeros(4), U, T), "perfect Qini curve equals random"),
    ],
)
def test_bad_input_is_rejected_with_a_message(args, message):
    with pytest.raises(ValueError, match=message):
        qini_coefficient(*args)
