"""The optimistic score u = μ + γ·s and the inputs it refuses."""

import math

import numpy as np
import pytest

from serving.policy.exploration import Exploration, action_probabilities
from serving.policy.uncertainty import with_bonus


def test_bonus_adds_gamma_standard_errors():
    assert with_bonus(np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.0, 2.0]), 2.0).tolist() == [2.0, 2.0, 7.0]


def test_gamma_zero_returns_mu_unchanged_as_a_new_array():
    mu = np.array([0.1, -0.3, 0.7])
    u = with_bonus(mu, np.array([1e300, 0.0, 5.0]), 0.0)
    assert u.tolist() == mu.tolist()
    assert u is not mu
    u[0] = 99.0
    assert mu[0] == 0.1


def test_zero_uncertainty_leaves_mu_as_it_is():
    mu = np.array([0.1, -0.3, 0.7])
    assert with_bonus(mu, np.zeros(3), 3.0).tolist() == mu.tolist()


def test_inputs_are_not_modified_and_lists_are_accepted():
    mu, s = np.array([1.0, 2.0]), np.array([0.5, 0.25])
    assert with_bonus(mu, s, 4.0).tolist() == [3.0, 3.0]
    assert (mu.tolist(), s.tolist()) == ([1.0, 2.0], [0.5, 0.25])
    assert with_bonus([1.0, 2.0], [0.5, 0.25], 4.0).tolist() == [3.0, 3.0]


def test_an_uncertain_action_overtakes_a_slightly_better_certain_one():
    mu, s = np.array([1.0, 0.9]), np.array([0.0, 0.1])
    greedy = Exploration(method="greedy")
    assert action_probabilities(with_bonus(mu, s, 0.5), greedy).tolist() == [1.0, 0.0]
    assert action_probabilities(with_bonus(mu, s, 2.0), greedy).tolist() == [0.0, 1.0]


def test_batches_of_requests_keep_their_shape():
    mu = np.array([[0.0, 1.0], [2.0, 3.0]])
    s = np.array([[1.0, 0.0], [0.5, 0.25]])
    assert with_bonus(mu, s, 2.0).tolist() == [[2.0, 1.0], [3.0, 3.5]]


@pytest.mark.parametrize(
    ("mu", "s", "gamma", "message"),
    [
        ([0.0, 1.0], [0.1], 1.0, r"same shape, one entry per action; got \(2,\) and \(1,\)"),
        ([0.0, 1.0], [[0.1, 0.2]], 1.0, r"same shape, one entry per action; got \(2,\) and \(1, 2\)"),
        ([0.0, 1.0, 2.0], [0.1, -0.2, -1.0], 1.0, r"s must be finite and >= 0 .*positions \[1, 2\]"),
        ([0.0, 1.0, 2.0], [math.nan, 0.2, 0.0], 1.0, r"s must be finite and >= 0 .*positions \[0\]"),
        ([0.0, 1.0], [0.0, math.inf], 1.0, r"s must be finite and >= 0 .*positions \[1\]"),
        ([0.0, math.nan], [0.1, 0.2], 1.0, r"mu is NaN at positions \[1\]"),
        ([0.0, 1.0], [0.1, 0.2], -0.5, r"gamma must be finite and >= 0 .*got -0.5"),
        ([0.0, 1.0], [0.1, 0.2], math.nan, r"gamma must be finite and >= 0"),
        ([0.0, 1.0], [0.1, 0.2], math.inf, r"gamma must be finite and >= 0"),
    ],
)
def test_bad_inputs_are_refused_saying_what_is_wrong(mu, s, gamma, message):
    with pytest.raises(ValueError, match=message):
        with_bonus(np.array(mu), np.array(s), gamma)


def test_negative_s_is_refused_even_when_gamma_is_zero():
    with pytest.raises(ValueError, match=r"positions \[0\]"):
        with_bonus(np.array([1.0]), np.array([-1.0]), 0.0)
