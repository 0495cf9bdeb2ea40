from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simulator import ACTION_IDS, Shop
from simulator.actions import ACTION_INDEX
from simulator.logging_policy import logging_probabilities, sample_actions


def _users(consent: list[bool], device: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"consent_marketing": consent, "device": device})


def test_probabilities_follow_the_documented_policy() -> None:
    probs = logging_probabilities(_users([False, True, True, False], ["mobile", "desktop", "mobile", "desktop"]))
    assert probs.shape == (4, len(ACTION_IDS))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    no_consent = np.zeros(len(ACTION_IDS))
    no_consent[0] = 1.0
    np.testing.assert_array_equal(probs[0], no_consent)
    np.testing.assert_array_equal(probs[3], no_consent)
    desktop, mobile = probs[1], probs[2]
    assert desktop[0] == pytest.approx(0.3) and mobile[0] == pytest.approx(0.3)
    np.testing.assert_allclose(desktop[1:], 0.7 / 8)
    push = ACTION_INDEX["push_reminder"]
    others = [i for i in range(1, len(ACTION_IDS)) if i != push]
    np.testing.assert_allclose(mobile[others], 0.7 / 9)
    assert mobile[push] == pytest.approx(2 * 0.7 / 9)


def test_missing_columns_are_named() -> None:
    with pytest.raises(ValueError, match="consent_marketing"):
        logging_probabilities(pd.DataFrame({"device": ["mobile"]}))


def test_sampled_propensity_is_the_probability_of_the_chosen_action(small_shop: Shop) -> None:
    probs = logging_probabilities(small_shop.users)
    action, propensity = sample_actions(np.random.default_rng(0), probs)
    assert action.dtype == np.int64 and propensity.dtype == np.float64
    np.testing.assert_array_equal(propensity, probs[np.arange(len(probs)), action])
    assert (probs[np.arange(len(probs)), action] > 0).all()


def test_sampling_frequencies_match_probabilities_and_are_deterministic() -> None:
    probs = np.tile(logging_probabilities(_users([True], ["mobile"])), (200_000, 1))
    a1, _ = sample_actions(np.random.default_rng(3), probs)
    a2, _ = sample_actions(np.random.default_rng(3), probs)
    np.testing.assert_array_equal(a1, a2)
    freq = np.bincount(a1, minlength=len(ACTION_IDS)) / len(a1)
    np.testing.assert_allclose(freq, probs[0], atol=4 * np.sqrt(0.25 / len(a1)))


def test_zero_probability_actions_are_never_sampled() -> None:
    probs = np.tile(logging_probabilities(_users([False], ["mobile"])), (10_000, 1))
    action, propensity = sample_actions(np.random.default_rng(1), probs)
    assert (action == 0).all() and (propensity == 1.0).all()
