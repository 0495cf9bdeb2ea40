"""Outcome calibration (Platt, isotonic) and uplift calibration by predicted-uplift bin."""

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from training.calibration import (
    CALIBRATION_COLUMNS,
    OutcomeCalibrator,
    UpliftRecalibrator,
    calibration_failures,
    calibration_summary,
    passes,
    shrunk_correction,
    uplift_calibration,
)

# --- outcome calibration -------------------------------------------------------------------------------------------


def test_platt_recovers_known_a_and_b():
    rng = np.random.default_rng(0)
    scores = rng.normal(loc=2.0, scale=3.0, size=50_000)
    y = (rng.random(len(scores)) < expit(0.7 * scores - 1.2)).astype(float)
    calibrator = OutcomeCalibrator("platt").fit(scores, y)
    # the ML estimates' standard errors are ≈ 0.01 here
    assert calibrator.a_ == pytest.approx(0.7, abs=0.05)
    assert calibrator.b_ == pytest.approx(-1.2, abs=0.05)
    np.testing.assert_allclose(calibrator.predict(scores), expit(calibrator.a_ * scores + calibrator.b_))


def test_platt_weights_act_as_repeated_rows():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=300)
    y = (rng.random(300) < expit(scores)).astype(float)
    weight = rng.integers(1, 4, 300).astype(float)
    weighted = OutcomeCalibrator("platt").fit(scores, y, sample_weight=weight)
    repeated = OutcomeCalibrator("platt").fit(np.repeat(scores, weight.astype(int)), np.repeat(y, weight.astype(int)))
    assert weighted.a_ == pytest.approx(repeated.a_, rel=1e-6)
    assert weighted.b_ == pytest.approx(repeated.b_, rel=1e-6, abs=1e-8)


def test_platt_refuses_revenue_and_asks_for_isotonic():
    with pytest.raises(ValueError, match="binary .* use method='isotonic'"):
        OutcomeCalibrator("platt").fit(np.arange(4.0), np.array([0.0, 12.5, 0.0, 3.0]))
    with pytest.raises(ValueError, match="both outcomes"):
        OutcomeCalibrator("platt").fit(np.arange(4.0), np.ones(4))
    with pytest.raises(ValueError, match="method must be"):
        OutcomeCalibrator("beta").fit(np.arange(4.0), np.array([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(NotFittedError):
        OutcomeCalibrator().predict(np.arange(3.0))


def test_isotonic_is_monotone_on_conversion_and_revenue():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=5000)
    conversion = (rng.random(5000) < expit(2 * scores)).astype(float)
    revenue = rng.exponential(scale=20, size=5000) * (rng.random(5000) < expit(scores))
    grid = np.linspace(-5, 5, 1001)  # also outside the fitted range: clipped
    for y in (conversion, revenue):
        calibrator = OutcomeCalibrator("isotonic").fit(scores, y)
        predicted = calibrator.predict(grid)
        assert (np.diff(predicted) >= 0).all()
        assert y.min() <= predicted.min() and predicted.max() <= y.max()
    # sklearn-style: clone keeps the parameters, not the fit
    assert clone(calibrator).get_params() == {"method": "isotonic"}


# --- uplift calibration --------------------------------------------------------------------------------------------


def test_uplift_calibration_table_by_hand():
    # one bin: treated y [1, 2, 3] → mean 2, s² = 1, v = 1/3; control y [0, 2] → mean 1, s² = 2, v = 2/2 = 1
    # observed = 2 − 1 = 1, se = √(1/3 + 1) = √(4/3) (Welch); predicted = mean of uplift = 0.6
    y = np.array([1.0, 2.0, 3.0, 0.0, 2.0])
    t = np.array([1, 1, 1, 0, 0])
    uplift = np.array([0.2, 0.4, 0.6, 0.8, 1.0])
    table = uplift_calibration(y, t, uplift, n_bins=1)
    assert list(table.columns) == list(CALIBRATION_COLUMNS)
    row = table.iloc[0]
    assert (row["n_treated"], row["n_control"], row["weight"]) == (3, 2, 5.0)
    assert row["predicted"] == pytest.approx(0.6) and row["observed"] == pytest.approx(1.0)
    assert row["se"] == pytest.approx(np.sqrt(4 / 3))
    assert row["lower"] == pytest.approx(1 - 1.959963984540054 * np.sqrt(4 / 3))
    assert row["covered"]
    # constant weights change nothing (the weighted variance is scale-free)
    pd.testing.assert_frame_equal(
        uplift_calibration(y, t, uplift, n_bins=1, sample_weight=np.full(5, 2.0)).drop(columns="weight"),
        table.drop(columns="weight"),
    )


def test_bins_are_equal_count_by_predicted_uplift():
    rng = np.random.default_rng(3)
    uplift = rng.normal(size=1003)
    table = uplift_calibration(rng.normal(size=1003), rng.integers(0, 2, 1003), uplift, n_bins=10)
    sizes = (table["n_treated"] + table["n_control"]).to_numpy()
    assert sizes.sum() == 1003 and sizes.max() - sizes.min() <= 1
    assert (np.diff(table["predicted"]) > 0).all()
    assert table.attrs["alpha"] == 0.05


def _randomised_experiment(seed, n=20_000):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = rng.integers(0, 2, n)
    tau = 0.5 + x
    y = 2 + 0.5 * x + t * tau + rng.normal(scale=2.0, size=n)
    return y, t, tau


def test_calibrated_predictions_are_covered_and_pass():
    y, t, tau = _randomised_experiment(0)
    table = uplift_calibration(y, t, tau)
    summary = calibration_summary(table)
    assert summary["coverage"] >= 0.8
    assert summary["slope"] == pytest.approx(1.0, abs=0.1)
    assert summary["intercept"] == pytest.approx(0.0, abs=0.15)
    assert summary["n_bins_usable"] == 10
    assert passes(table) and calibration_failures(table) == []


def test_predictions_twice_the_truth_have_slope_one_half_and_fail():
    y, t, tau = _randomised_experiment(0)
    table = uplift_calibration(y, t, 2 * tau)
    summary = calibration_summary(table)
    assert summary["slope"] == pytest.approx(0.5, abs=0.05)
    assert summary["coverage"] < 0.8
    assert not passes(table)
    failures = calibration_failures(table)
    assert any(f.startswith("coverage") for f in failures) and any(f.startswith("slope") for f in failures)


def test_max_error_is_checked_when_given():
    y, t, tau = _randomised_experiment(0)
    table = uplift_calibration(y, t, tau)
    error = calibration_summary(table)["mean_abs_error"]
    assert passes(table, max_error=error * 1.01)
    assert calibration_failures(table, max_error=error * 0.5) == [
        f"mean absolute calibration error {error:.4g} > {error * 0.5:.4g}"
    ]


def test_inverse_propensity_weights_remove_confounding_within_bins():
    # treatment probability and baseline both rise with x: within a bin the treated rows have larger baselines
    rng = np.random.default_rng(0)
    n = 40_000
    x = rng.normal(size=n)
    p_treated = expit(2 * x)
    t = (rng.random(n) < p_treated).astype(int)
    tau = 1 + x
    y = 10 * x + t * tau + rng.normal(size=n)
    weight = 1 / np.where(t == 1, p_treated, 1 - p_treated)
    weighted = uplift_calibration(y, t, tau, sample_weight=weight)
    unweighted = uplift_calibration(y, t, tau)
    assert passes(weighted)
    assert not passes(unweighted)
    # every unweighted bin overstates the uplift; weighted, the typical bin is close (the extreme bins, with
    # weights up to 1/p ≈ 1000, are noisy but their intervals say so)
    assert (unweighted["observed"] > unweighted["predicted"]).all()
    error = (weighted["observed"] - weighted["predicted"]).abs().median()
    assert error < (unweighted["observed"] - unweighted["predicted"]).abs().median() / 2


def test_bins_without_both_arms_are_not_usable():
    # the top bin holds treated rows only: observed and se are NaN, the bin is not covered and not summarised
    y = np.arange(8.0)
    t = np.array([0, 1, 0, 1, 0, 1, 1, 1])
    table = uplift_calibration(y, t, np.arange(8.0), n_bins=4)
    assert np.isnan(table.loc[3, "observed"]) and not table.loc[3, "covered"]
    assert calibration_summary(table)["n_bins_usable"] == 0  # one row per arm elsewhere: no se either
    assert calibration_failures(table) == ["only 0 bins have both arms with a standard error; need 2"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_bins": 0}, "n_bins must be a positive integer"),
        ({"n_bins": 50}, "cannot fill 50 bins"),
        ({"alpha": 1.0}, "alpha must be in"),
        ({"sample_weight": -np.ones(20)}, "finite and >= 0"),
    ],
)
def test_bad_calibration_input_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        uplift_calibration(np.zeros(20), np.r_[np.zeros(10), np.ones(10)], np.arange(20.0), **kwargs)


# --- uplift recalibration ------------------------------------------------------------------------------------------


def recalibration_data(n: int, noise: float, seed: int = 0):
    """One action 'a' vs no_action (p = 0.5); predictions τ̂ ~ N(1, 1) twice as spread as the truth and 0.2 too high:
    τ = 0.3 + 0.5·τ̂ (true line: slope 0.5, intercept 0.3)."""
    rng = np.random.default_rng(seed)
    predicted = rng.normal(1.0, 1.0, size=n)
    treated = rng.random(n) < 0.5
    y = rng.normal(scale=noise, size=n) + treated * (0.3 + 0.5 * predicted)
    return y, np.where(treated, "a", "no_action"), predicted[:, None]


def test_shrunk_correction_keeps_only_what_stands_out_of_its_noise():
    assert shrunk_correction(0.5, 0.25) == pytest.approx(0.375)  # 0.5·(1 − 0.25)
    assert shrunk_correction(-1.0, 0.5) == pytest.approx(-0.75)
    assert shrunk_correction(0.2, 0.3) == 0.0  # within one standard error: dropped
    assert shrunk_correction(float("nan"), 0.1) == 0.0 and shrunk_correction(0.3, float("inf")) == 0.0


def test_on_a_large_log_the_shrunk_recalibration_is_the_linear_one():
    y, actions, predicted = recalibration_data(200_000, noise=1.0)
    linear = UpliftRecalibrator().fit(y, actions, predicted, ["a"], "no_action")
    shrunk = UpliftRecalibrator(shrink=True).fit(y, actions, predicted, ["a"], "no_action")
    assert linear.slope_[0] == pytest.approx(0.5, abs=0.03) and linear.intercept_[0] == pytest.approx(0.3, abs=0.03)
    assert shrunk.slope_[0] == pytest.approx(linear.slope_[0], abs=0.01)
    assert shrunk.intercept_[0] == pytest.approx(linear.intercept_[0], abs=0.01)


def test_on_a_noisy_log_the_shrunk_recalibration_keeps_the_learners_uplift():
    """Outcome noise 100× the effect on 2,000 rows: the observed line is noise, the linear map follows it anyway."""
    y, actions, predicted = recalibration_data(2_000, noise=100.0)
    shrunk = UpliftRecalibrator(shrink=True).fit(y, actions, predicted, ["a"], "no_action")
    assert shrunk.slope_[0] == 1.0 and shrunk.intercept_[0] == 0.0
    np.testing.assert_array_equal(shrunk.transform(predicted), predicted)
    linear = UpliftRecalibrator().fit(y, actions, predicted, ["a"], "no_action")
    assert linear.intercept_[0] == pytest.approx(0.257, abs=0.001)  # the noisy level taken at face value
