"""Calibration of predicted vs realised uplift: the IPW estimate, the support gate and the alarm."""

import numpy as np
import pytest

from training.guards.calibration import calibration, realised_uplift
from training.guards.records import calibration_of

ACTIONS = ["none", "a", "b"]


def test_realised_uplift_is_the_mean_inverse_propensity_difference():
    probabilities = [0.5, 0.25, 0.25]
    # served a: (10/0.25 − 0)/2 over the two actions; served none: (0 − 10/0.5) for each action
    assert realised_uplift(10.0, "a", ACTIONS, probabilities, "none", ["a", "b"]) == pytest.approx(20.0)
    assert realised_uplift(10.0, "none", ACTIONS, probabilities, "none", ["a", "b"]) == pytest.approx(-20.0)
    assert np.isnan(realised_uplift(10.0, "a", ACTIONS, [0.0, 0.5, 0.5], "none", ["a", "b"]))


def logged(rng: np.random.Generator, n: int, true_uplift: dict[str, float], predicted: dict[str, float]) -> list[dict]:
    """Uniformly randomised decisions over ACTIONS with value = 1 + the action's true uplift + noise."""
    records = []
    for served in rng.choice(ACTIONS, n):
        value = 1.0 + true_uplift.get(served, 0.0) + rng.normal(0, 0.5)
        records.append({"candidates": ACTIONS, "scores": [0.0, predicted["a"], predicted["b"]],
                        "probabilities": [1 / 3] * 3, "chosen": [served], "fallback": None, "value": value})
    return records


def test_a_calibrated_model_passes_and_a_miscalibrated_one_alarms():
    rng = np.random.default_rng(3)
    truth = {"a": 0.4, "b": -0.2}
    good = calibration_of(logged(rng, 3000, truth, {"a": 0.4, "b": -0.2}), "none", {})
    assert good.predicted == pytest.approx(0.1) and abs(good.gap) < 3 * good.se
    assert not good.alarm(1e-4, 0.05, min_support=100)
    bad = calibration_of(logged(rng, 3000, truth, {"a": 1.4, "b": 0.8}), "none", {})
    assert bad.gap == pytest.approx(-1.0, abs=4 * bad.se) and bad.support > 900
    assert bad.alarm(1e-4, 0.05, min_support=100)


def test_the_check_is_silent_without_support_for_every_arm():
    rng = np.random.default_rng(4)
    bad = calibration_of(logged(rng, 150, {"a": 0.4, "b": -0.2}, {"a": 3.0, "b": 3.0}), "none", {})
    assert bad.p_value < 1e-4 and bad.support < 100
    assert not bad.alarm(1e-3, 0.05, min_support=100)


def test_fallbacks_are_left_out_and_revenue_pays_the_served_actions_cost():
    records = [
        {"candidates": ACTIONS, "scores": [0.0, 1.0, 1.0], "probabilities": [0.5, 0.25, 0.25], "chosen": ["a"],
         "fallback": None, "revenue": 12.0},
        {"candidates": ["none"], "scores": [0.0], "probabilities": [1.0], "chosen": ["none"],
         "fallback": "cautious_neutral", "revenue": 100.0},
        {"candidates": ACTIONS, "scores": [0.0, 1.0, 1.0], "probabilities": [0.5, 0.25, 0.25], "chosen": ["none"],
         "fallback": None, "revenue": 4.0},
    ]
    result = calibration_of(records, "none", {"a": 2.0})
    # (12 − 2)/0.25/2 = 20 and −4/0.5 = −8: mean realised 6, predicted 1
    assert (result.n, result.realised, result.predicted) == (2, pytest.approx(6.0), pytest.approx(1.0))


def test_calibration_on_arrays_ignores_missing_entries():
    result = calibration(np.array([1.0, 1.0, np.nan]), np.array([2.0, 4.0, 9.0]))
    assert (result.n, result.gap) == (2, pytest.approx(2.0))
    assert result.se == pytest.approx(np.std([1.0, 3.0], ddof=1) / np.sqrt(2))
