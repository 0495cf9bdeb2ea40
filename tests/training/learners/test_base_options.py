"""Options every learner shares: linear base models, outcomes of any sign, thin arms, normalised weights."""

import logging

import numpy as np
import pytest

from training.learners import LEARNERS, LinearBase, SLearner, TLearner


def linear_data(n: int = 3000, seed: int = 0):
    """Continuous outcome of either sign; effects a: 1 + x0 (linear), b: −0.5 (constant); randomised, p = 1/3."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    treatment = rng.choice(["no_action", "a", "b"], size=n)
    tau = np.column_stack([1.0 + X[:, 0], np.full(n, -0.5)])
    effect = np.select([treatment == "a", treatment == "b"], [tau[:, 0], tau[:, 1]], 0.0)
    y = -2.0 + X[:, 1] + effect + rng.normal(scale=0.5, size=n)
    return X, treatment, y, np.full(n, 1 / 3), tau


@pytest.mark.parametrize("name", LEARNERS)
def test_every_learner_fits_negative_outcomes_on_a_linear_base(name):
    X, treatment, y, propensity, tau = linear_data()
    assert (y < 0).mean() > 0.5
    learner = LEARNERS[name](outcome="continuous", base_model="linear").fit(X, treatment, y, propensity=propensity)
    uplift = learner.predict_uplift(X)
    # b's constant effect is recovered by every linear learner; a's slope by every learner but the S-learner,
    # whose linear form [x, one-hot(arm)] has one constant effect per arm (its known limit)
    assert uplift[:, 1].mean() == pytest.approx(-0.5, abs=0.08)
    if name == "s_learner":
        assert np.ptp(uplift[:, 0]) == pytest.approx(0.0, abs=1e-9)
    else:
        assert np.mean((uplift[:, 0] - tau[:, 0]) ** 2) < 0.02


def test_tweedie_refuses_negative_outcomes_with_the_fix_in_the_message():
    X, treatment, y, propensity, _ = linear_data()
    with pytest.raises(ValueError, match=r"reg:tweedie needs y >= 0 but \d+ rows are negative; use "
                                         r"outcome='continuous'"):
        SLearner().fit(X, treatment, y, propensity=propensity)


@pytest.mark.parametrize(("params", "message"), [
    ({"base_model": "forest"}, r"base_model must be one of \['xgboost', 'linear'\]; got 'forest'"),
    ({"thin_arms": "pool"}, r"thin_arms must be one of \['drop', 'raise'\]; got 'pool'"),
    ({"base_model": "linear", "objective": "reg:gamma"}, "a linear base model supports objectives"),
])
def test_bad_options_are_refused(params, message):
    X, treatment, y, propensity, _ = linear_data(n=300)
    with pytest.raises(ValueError, match=message):
        TLearner(**params).fit(X, treatment, np.abs(y), propensity=propensity)


def test_thin_arms_are_dropped_with_a_warning_and_recorded(caplog):
    """80 thin arms, as in a recommendation log: the fit keeps the arms with enough rows instead of refusing."""
    rng = np.random.default_rng(4)
    thin = [f"item{k}" for k in range(80)]
    treatment = np.array(["no_action"] * 600 + ["a"] * 400 + [thin[k % 80] for k in range(240)])
    X = rng.normal(size=(len(treatment), 2))
    y = rng.normal(size=len(treatment)) + (treatment == "a")
    with caplog.at_level(logging.WARNING, logger="training.learners.base"):
        learner = TLearner(outcome="continuous").fit(X, treatment, y)
    assert learner.treatments_ == ["a"]
    assert learner.dropped_arms_ == {arm: 3 for arm in thin}
    assert "80 thin arm(s) left out of the fit (fewer than min_rows_per_arm=50 rows)" in caplog.text
    with pytest.raises(ValueError, match=r"arms with fewer than min_rows_per_arm=50 rows: \{'item0': 3"):
        TLearner(outcome="continuous", thin_arms="raise").fit(X, treatment, y)


@pytest.mark.parametrize("name", [n for n in LEARNERS if n not in ("dr_learner", "r_learner")])
def test_a_constant_propensity_does_not_change_the_fit(name):
    """Weights are normalised to mean 1 per base model, so min_child_weight keeps its meaning: a constant 1/p (3 or 5)
    gives exactly the same fit as another constant, and (but for the X-learner's mixing share g, estimated from the
    propensities when given and from row shares otherwise) the same as no propensities at all. Before, 1/p scaled
    every hessian, so min_child_weight=50 meant leaves of 10 rows at p = 1/5. The DR- and R-learners use p itself
    in their pseudo-outcomes, so they are left out."""
    X, treatment, y, _, _ = linear_data(n=1500)
    make = lambda: LEARNERS[name](outcome="continuous", n_estimators=20)  # noqa: E731
    third = make().fit(X, treatment, y, propensity=np.full(len(y), 1 / 3)).predict_uplift(X)
    fifth = make().fit(X, treatment, y, propensity=np.full(len(y), 0.2)).predict_uplift(X)
    np.testing.assert_array_equal(third, fifth)
    if name != "x_learner":
        np.testing.assert_array_equal(make().fit(X, treatment, y).predict_uplift(X), fifth)


def test_linear_base_imputes_missing_values_and_standardises():
    rng = np.random.default_rng(1)
    X = rng.normal(loc=50.0, scale=10.0, size=(500, 2))
    y = 3.0 + 0.2 * X[:, 0]
    X[::10, 1] = np.nan
    model = LinearBase(alpha=1e-6).fit(X, y)
    np.testing.assert_allclose(model.predict(X), y, atol=1e-6)
    assert np.isfinite(model.predict(np.array([[np.nan, np.nan]]))).all()


@pytest.mark.parametrize("name", LEARNERS)
def test_tree_params_are_what_the_base_models_are_built_with(name):
    # A baseline "with the learner's settings" (demo.loop's response model) copies tree_params(): it must be exactly
    # the hyper-parameters the learner's XGBoost base models get.
    learner = LEARNERS[name](n_estimators=7, max_depth=3, learning_rate=0.2, subsample=0.6, colsample_bytree=0.7,
                             min_child_weight=11.0, reg_lambda=2.5)
    params = learner.tree_params()
    assert params == {"n_estimators": 7, "max_depth": 3, "learning_rate": 0.2, "subsample": 0.6,
                      "colsample_bytree": 0.7, "min_child_weight": 11.0, "reg_lambda": 2.5}
    built = learner._regressor().get_params()
    assert {k: built[k] for k in params} == params
