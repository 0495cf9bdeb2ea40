"""The two-part learner: purchase × amount, on data whose amounts are heavy-tailed noise around a known mean."""

import numpy as np
import pytest
from sklearn.base import clone

from training.learners import SLearner, TwoPartLearner
from training.metrics import pehe


def purchase_data(n: int = 20_000, seed: int = 0):
    """Arms no_action, a, b (propensities 0.4/0.3/0.3). Purchase logit −2 + x0; a adds +0.8 where x1 > 0, b adds
    +0.4 everywhere. Amount lognormal (σ = 1.2) with mean 20·exp(0.3·x2), b's amounts 20 % lower (a discount).
    Returns X, treatment, y, propensity and the true uplift in expected revenue (n, 2)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    treatment = rng.choice(["no_action", "a", "b"], size=n, p=[0.4, 0.3, 0.3])
    propensity = np.select([treatment == "no_action"], [0.4], 0.3)
    logit = -2.0 + X[:, 0]
    effect_a, effect_b = 0.8 * (X[:, 1] > 0), np.full(n, 0.4)
    mean_amount = 20.0 * np.exp(0.3 * X[:, 2])
    sigma = 1.2

    def expected(extra: np.ndarray, discount: float) -> np.ndarray:
        return 1 / (1 + np.exp(-(logit + extra))) * mean_amount * discount

    base = expected(np.zeros(n), 1.0)
    tau = np.column_stack([expected(effect_a, 1.0) - base, expected(effect_b, 0.8) - base])
    extra = np.select([treatment == "a", treatment == "b"], [effect_a, effect_b], 0.0)
    bought = rng.random(n) < 1 / (1 + np.exp(-(logit + extra)))
    amount = mean_amount * np.where(treatment == "b", 0.8, 1.0) * rng.lognormal(-sigma**2 / 2, sigma, size=n)
    return X, treatment, np.where(bought, amount, 0.0), propensity, tau


@pytest.fixture(scope="module")
def data():
    return purchase_data()


@pytest.fixture(scope="module")
def fitted(data):
    X, treatment, y, propensity, _ = data
    return TwoPartLearner(n_jobs=1).fit(X, treatment, y, propensity=propensity)


def test_fit_returns_self_sets_its_parts_and_clones(data, fitted):
    X, treatment, y, propensity, _ = data
    assert fitted.arms_ == ["no_action", "a", "b"] and fitted.treatments_ == ["a", "b"]
    assert fitted.n_purchases_ == int((y > 0).sum())
    assert fitted.value_model_.get_params()["n_estimators"] == 100
    assert fitted.purchase_model_.get_params()["objective"] == "binary:logistic"
    fresh = clone(fitted)
    assert fresh.get_params() == fitted.get_params() and not hasattr(fresh, "purchase_model_")
    assert fresh.fit(X, treatment, y, propensity=propensity) is fresh


def test_outcome_is_purchase_probability_times_amount_and_uplift_its_difference(data, fitted):
    X = data[0][:500]
    purchase, value = fitted.predict_parts(X)
    assert purchase.shape == value.shape == (500, 3)
    assert ((purchase > 0) & (purchase < 1)).all() and (value > 0).all()
    outcomes = fitted.predict_outcomes(X)
    np.testing.assert_allclose(outcomes, purchase.astype(float) * value)
    np.testing.assert_allclose(fitted.predict_uplift(X), outcomes[:, 1:] - outcomes[:, :1])


def test_recovers_the_effects_closer_than_the_s_learner_on_heavy_tailed_amounts(data, fitted):
    X, treatment, y, propensity, tau = data
    uplift = fitted.predict_uplift(X)
    np.testing.assert_array_less(np.abs(uplift.mean(axis=0) - tau.mean(axis=0)), 0.35)  # τ means 1.18 and 0.21
    s_uplift = SLearner(n_jobs=1).fit(X, treatment, y, propensity=propensity).predict_uplift(X)

    def step(u: np.ndarray) -> float:  # who gains from a (x1 > 0): 2.38 in truth
        return float(u[X[:, 1] > 0.5, 0].mean() - u[X[:, 1] < -0.5, 0].mean())

    # the amounts' noise no longer buries the step: the S-learner on revenue finds 0.33 of it, the two parts 1.04
    assert step(uplift) > 0.35 * step(tau) and step(uplift) > 2 * step(s_uplift)
    two_part_error, s_error = pehe(uplift, tau), pehe(s_uplift, tau)
    assert (two_part_error < s_error).all(), (two_part_error, s_error)


@pytest.mark.parametrize(("params", "y_sign", "message"), [
    ({"outcome": "continuous"}, 1, r"needs outcome='revenue' and objective=None \(got outcome='continuous'"),
    ({"objective": "reg:tweedie"}, 1, r"objective='reg:tweedie'\); use the S-learner"),
    ({"base_model": "linear"}, 1, "XGBoost parts only; got base_model='linear'"),
    ({}, -1, r"needs revenue amounts >= 0"),
])
def test_refuses_what_it_cannot_split(data, params, y_sign, message):
    X, treatment, y, propensity, _ = data
    with pytest.raises(ValueError, match=message):
        TwoPartLearner(**params).fit(X[:300], treatment[:300], y_sign * (y[:300] + 1), propensity=propensity[:300])


def test_refuses_a_log_without_two_purchases(data):
    X, treatment, _, propensity, _ = data
    y = np.zeros(300)
    y[5] = 10.0
    with pytest.raises(ValueError, match="1 rows have revenue > 0; the amount model needs at least 2"):
        TwoPartLearner().fit(X[:300], treatment[:300], y, propensity=propensity[:300])
