from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import check_grad
from sklearn.exceptions import NotFittedError

from training.delay import (
    FAMILIES,
    DelayModel,
    DelayModelSelector,
    GroupedDelayModel,
    delay_corrected_labels,
    interim_estimate,
    observed_outcomes,
    revenue_per_conversion,
    weighted_binary_labels,
)
from training.delay.families import make_family
from training.delay.model import _NegLogLik
from training.labels import attributed_revenue

W = 72.0
T0 = pd.Timestamp("2026-10-01", tz="UTC")
H = pd.Timedelta(hours=1)


def censored_sample(
    rng: np.random.Generator, n: int, p: float, delays: np.ndarray, max_age: float = 48.0
) -> tuple[np.ndarray, np.ndarray]:
    """Cure-model data read at a random age c ~ U(0, max_age): (elapsed, converted) as the platform sees them."""
    eventually = rng.random(n) < p
    age = rng.uniform(0.0, max_age, n)
    seen = eventually & (delays < np.minimum(age, W))
    return np.where(seen, delays, np.minimum(age, W)), seen


@pytest.mark.parametrize("seed", [3, 4])
def test_exponential_recovers_rate_and_p_where_a_naive_fit_does_not(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, p, rate = 100_000, 0.1, 0.1
    elapsed, converted = censored_sample(rng, n, p, rng.exponential(1 / rate, n))
    model = DelayModel("exponential").fit(elapsed, converted)
    assert model.converged_
    assert model.params_["rate_per_hour"] == pytest.approx(rate, rel=0.05)
    assert model.p_ == pytest.approx(p, rel=0.05)
    # Ignoring censoring: the share converted so far and 1 / mean observed delay miss the same tolerance.
    naive_p, naive_rate = converted.mean(), 1.0 / elapsed[converted].mean()
    assert naive_p != pytest.approx(p, rel=0.05)
    assert naive_rate != pytest.approx(rate, rel=0.05)
    # A plain (non-cure) censored exponential that treats every pending row as a future buyer is wrong too.
    plain_rate = converted.sum() / elapsed.sum()
    assert plain_rate != pytest.approx(rate, rel=0.05)


@pytest.mark.parametrize(("shape", "scale"), [(0.6, 8.0), (2.0, 22.57)])
def test_weibull_recovers_shape_and_scale(shape: float, scale: float) -> None:
    rng = np.random.default_rng(11)
    n, p = 100_000, 0.08
    elapsed, converted = censored_sample(rng, n, p, scale * rng.weibull(shape, n), max_age=96.0)
    model = DelayModel("weibull").fit(elapsed, converted)
    assert model.params_["shape"] == pytest.approx(shape, rel=0.06)
    assert model.params_["scale_hours"] == pytest.approx(scale, rel=0.06)
    assert model.window_rate_ == pytest.approx(p * (1 - math.exp(-((W / scale) ** shape))), rel=0.05)


def test_aic_picks_weibull_on_weibull_data_and_exponential_on_exponential_data() -> None:
    rng = np.random.default_rng(5)
    n = 60_000
    weibull = DelayModelSelector().fit(*censored_sample(rng, n, 0.1, 8.0 * rng.weibull(0.6, n)))
    assert weibull.family_ == "weibull"
    assert list(weibull.comparison_["family"]) == list(FAMILIES)
    assert weibull.comparison_.loc[weibull.comparison_["chosen"], "family"].tolist() == ["weibull"]
    exponential = DelayModelSelector().fit(*censored_sample(rng, n, 0.1, rng.exponential(10.0, n)))
    assert exponential.family_ == "exponential"
    aic = exponential.comparison_.set_index("family")["aic"]
    assert aic["exponential"] == aic.min()
    # nested families: the richer ones never fit worse
    loglik = exponential.comparison_.set_index("family")["loglik"]
    assert loglik["weibull"] >= loglik["exponential"] - 1e-6
    assert loglik["piecewise_exponential"] >= loglik["exponential"] - 1e-6


def test_holdout_criterion_also_finds_the_weibull() -> None:
    rng = np.random.default_rng(6)
    n = 60_000
    selector = DelayModelSelector(criterion="holdout").fit(*censored_sample(rng, n, 0.1, 20.0 * rng.weibull(2.0, n)))
    assert selector.family_ == "weibull"
    assert "holdout_loglik" in selector.comparison_


@pytest.mark.parametrize("family", FAMILIES)
def test_likelihood_gradient_is_exact(family: str) -> None:
    rng = np.random.default_rng(2)
    delays, pending = rng.exponential(8.0, 300), rng.uniform(0, W, 700)
    objective = _NegLogLik(make_family(family), delays, pending)
    theta = np.concatenate([[-1.5], rng.normal(-1.0, 0.3, make_family(family).n_params())])
    assert check_grad(lambda x: objective(x)[0], lambda x: objective(x)[1], theta) < 1e-5


def test_pending_probability_is_the_conditional_formula() -> None:
    rng = np.random.default_rng(7)
    n = 20_000
    model = DelayModel("exponential").fit(*censored_sample(rng, n, 0.1, rng.exponential(10.0, n)))
    p, rate = model.p_, model.params_["rate_per_hour"]
    c = np.array([0.0, 1.0, 30.0, 71.9, 72.0, 100.0])
    f = 1 - np.exp(-rate * np.minimum(c, W))
    expected = p * ((1 - math.exp(-rate * W)) - f) / (1 - p * f)
    np.testing.assert_allclose(model.pending_probability(c)[:4], expected[:4], rtol=1e-9)
    assert model.pending_probability(c)[4:].tolist() == [0.0, 0.0]  # the window has closed
    assert model.pending_probability([0.0])[0] == pytest.approx(model.window_rate_)


def test_grouped_model_pools_groups_with_few_conversions_and_says_so() -> None:
    rng = np.random.default_rng(8)
    n = 40_000
    fast_t, fast_c = censored_sample(rng, n, 0.1, rng.exponential(3.0, n))
    slow_t, slow_c = censored_sample(rng, n, 0.1, 25.0 * rng.weibull(2.0, n))
    # a small group whose delays look like everyone's (half fast, half slow) but which converts 3 times less
    m = 2_000
    mixed = np.where(rng.random(m) < 0.5, rng.exponential(3.0, m), 25.0 * rng.weibull(2.0, m))
    rare_t, rare_c = censored_sample(rng, m, 0.03, mixed)
    elapsed = np.concatenate([fast_t, slow_t, rare_t])
    converted = np.concatenate([fast_c, slow_c, rare_c])
    groups = np.array(["fast"] * n + ["slow"] * n + ["rare"] * m, dtype=object)
    model = GroupedDelayModel(min_conversions=200).fit(elapsed, converted, groups)
    table = model.groups_.set_index("group")
    assert table.loc["fast", "source"] == table.loc["slow", "source"] == "own fit"
    assert table.loc["rare", "source"] == "pooled F, own p (< 200 conversions)"
    assert table.loc["slow", "family"] == "weibull"
    assert model.model_for("never_seen") is model.pooled_
    # the rare group keeps the pooled delay distribution but its own (lower) conversion probability
    rare = model.model_for("rare")
    np.testing.assert_array_equal(rare.theta_[1:], model.pooled_.model_.theta_[1:])
    assert table.loc["rare", "n_conversions"] < 200
    assert rare.p_ == pytest.approx(0.03, rel=0.3) and model.pooled_.p_ == pytest.approx(0.1, rel=0.1)
    q = model.pending_probability(np.full(4, 5.0), np.array(["fast", "slow", "rare", "never_seen"], dtype=object))
    assert q[1] > q[0]  # after 5 h most fast buyers have bought; most slow ones have not
    assert q[2] == pytest.approx(float(rare.pending_probability([5.0])[0]))
    assert q[3] == pytest.approx(float(model.pooled_.pending_probability([5.0])[0]))
    pooled_all = GroupedDelayModel(min_conversions=200, pool="all").fit(elapsed, converted, groups)
    assert pooled_all.model_for("rare") is pooled_all.pooled_
    assert pooled_all.groups_.set_index("group").loc["rare", "source"] == "pooled (< 200 conversions)"


def test_fit_errors_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="no conversions"):
        DelayModel().fit([1.0, 2.0], [False, False])
    with pytest.raises(ValueError, match="mark those rows converted=False"):
        DelayModel().fit([80.0, 2.0], [True, False])
    with pytest.raises(ValueError, match="unknown delay family"):
        DelayModel("gamma").fit([1.0, 2.0], [True, False])
    with pytest.raises(NotFittedError, match="call fit"):
        DelayModel().pending_probability([1.0])
    with pytest.raises(ValueError, match="differ in length"):
        DelayModel().fit([1.0, 2.0], [True])


def _log() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Four exposures (one per session) and their purchases."""
    exposures = pd.DataFrame({
        "session_id": ["a", "b", "c", "d"],
        "ts": [T0, T0 + H, T0 + 2 * H, T0 + 100 * H],
        "action_id": ["x", "x", "y", "y"],
    }, index=[10, 11, 12, 13])
    purchases = pd.DataFrame({
        "session_id": ["a", "b", "c", "zz"],
        # a: 5 h after; b: 30 h after; c: exactly at its window's end (not attributed); zz: no exposure
        "ts": [T0 + 5 * H, T0 + 31 * H, T0 + 74 * H, T0 + 2 * H],
        "revenue": [20.0, 30.0, 99.0, 7.0],
    })
    return exposures, purchases


def test_observed_outcomes_censor_at_as_of_and_agree_with_the_final_labels() -> None:
    exposures, purchases = _log()
    early = observed_outcomes(exposures, purchases, T0 + 10 * H)
    assert early.index.tolist() == [10, 11, 12]  # exposure d has not happened yet
    assert early["converted"].tolist() == [True, False, False]
    np.testing.assert_allclose(early["elapsed_hours"], [5.0, 9.0, 8.0])
    assert early["revenue"].tolist() == [20.0, 0.0, 0.0]
    late = observed_outcomes(exposures, purchases, T0 + 500 * H)
    assert late["window_closed"].all()
    np.testing.assert_allclose(late["elapsed_hours"], [5.0, 30.0, 72.0, 72.0])
    expected = attributed_revenue(exposures, purchases, pd.Timedelta(hours=W))
    pd.testing.assert_series_equal(late["revenue"], expected, check_names=False)


def test_interim_estimate_never_counts_a_conversion_twice() -> None:
    exposures, purchases = _log()
    rng = np.random.default_rng(9)
    n = 20_000
    model = DelayModel().fit(*censored_sample(rng, n, 0.1, rng.exponential(10.0, n)))
    value = 25.0
    before = observed_outcomes(exposures, purchases, T0 + 20 * H)  # b still pending (19 h)
    after = observed_outcomes(exposures, purchases, T0 + 40 * H)  # b bought at 31 h
    est_before = interim_estimate(model, before, value)
    est_after = interim_estimate(model, after, value)
    q = model.pending_probability(before["elapsed_hours"].to_numpy())
    assert est_before.realised_conversions == 1 and est_before.pending_exposures == 2
    assert est_before.expected_late_conversions == pytest.approx(q[1] + q[2])
    assert est_before.revenue == pytest.approx(20.0 + value * (q[1] + q[2]))
    # Once b's purchase arrives it is realised and drops out of the pending remainder: counted exactly once.
    q_after = model.pending_probability(after["elapsed_hours"].to_numpy())
    assert after.index.tolist() == [10, 11, 12] and after["converted"].tolist() == [True, True, False]
    assert est_after.realised_conversions == 2 and est_after.realised_revenue == 50.0
    assert est_after.pending_exposures == 1
    assert est_after.expected_late_conversions == pytest.approx(q_after[2])
    assert est_after.revenue == pytest.approx(50.0 + value * q_after[2])
    # b moved from "expected q_b" to "realised 1"; c's remainder shrank as it aged without buying
    assert est_after.conversions - est_before.conversions == pytest.approx((1 - q[1]) + (q_after[2] - q[2]))
    # With every window closed the estimate is the realised value, nothing expected.
    final = interim_estimate(model, observed_outcomes(exposures, purchases, T0 + 500 * H), value)
    assert final.expected_late_conversions == 0.0 and final.pending_exposures == 0
    assert final.revenue == final.realised_revenue == 50.0


def test_interim_estimate_recovers_the_final_rate_where_the_naive_one_is_short() -> None:
    rng = np.random.default_rng(10)
    p, mean = 0.08, 10.0
    # history: 60k exposures read 1 h after a day closes (ages 1 … 73 h); the day: 20k exposures aged 1 … 25 h
    model = DelayModel().fit(*censored_sample(rng, 60_000, p, rng.exponential(mean, 60_000), max_age=73.0))
    n = 20_000
    eventually = rng.random(n) < p
    delay = rng.exponential(mean, n)
    age = rng.uniform(1.0, 25.0, n)
    observed = pd.DataFrame({
        "converted": eventually & (delay < age),
        "elapsed_hours": np.where(eventually & (delay < age), delay, age),
        "revenue": np.where(eventually & (delay < age), 30.0, 0.0),
    })
    final_rate = (eventually & (delay < W)).mean()
    estimate = interim_estimate(model, observed, 30.0)
    assert estimate.conversion_rate == pytest.approx(final_rate, rel=0.05)
    assert estimate.naive_conversion_rate < 0.75 * final_rate
    assert estimate.revenue == pytest.approx(30.0 * final_rate * n, rel=0.05)


def test_delay_corrected_labels_and_weighted_rows() -> None:
    exposures, purchases = _log()
    rng = np.random.default_rng(12)
    model = DelayModel().fit(*censored_sample(rng, 20_000, 0.1, rng.exponential(10.0, 20_000)))
    observed = observed_outcomes(exposures, purchases, T0 + 20 * H)
    values = revenue_per_conversion([20.0, 40.0, 0.0], [True, True, False], ["x", "x", "y"], min_conversions=2)
    assert values == {None: 30.0, "x": 30.0, "y": 30.0}
    labels = delay_corrected_labels(model, observed, values, group_column="action_id")
    q = model.pending_probability(observed["elapsed_hours"].to_numpy())
    assert labels.index.tolist() == [10, 11, 12]
    assert labels["final"].tolist() == [True, False, False]
    np.testing.assert_allclose(labels["label_conversion"], [1.0, q[1], q[2]])
    np.testing.assert_allclose(labels["label_revenue"], [20.0, 30.0 * q[1], 30.0 * q[2]])
    rows = weighted_binary_labels(labels)
    assert len(rows) == 5
    np.testing.assert_allclose(rows.groupby(level=0)["weight"].sum(), [1.0, 1.0, 1.0])
    expected_label = (rows["label"] * rows["weight"]).groupby(level=0).sum()
    np.testing.assert_allclose(expected_label.to_numpy(), labels["label_conversion"].to_numpy())


def test_value_per_conversion_must_cover_every_group() -> None:
    exposures, purchases = _log()
    model = DelayModel().fit([1.0, 2.0, 3.0], [True, False, False])
    observed = observed_outcomes(exposures, purchases, T0 + 20 * H)
    with pytest.raises(ValueError, match=r"no value for groups \['y'\]"):
        interim_estimate(model, observed, {"x": 10.0}, group_column="action_id")
    with pytest.raises(ValueError, match="observed_outcomes"):
        interim_estimate(model, observed.drop(columns="elapsed_hours"), 10.0)
