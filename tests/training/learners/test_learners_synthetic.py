"""Known-effect tests of the S-, T-, X- and DR-learners on synthetic data (causalml-style), plus their contract."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

from training.learners import (
    LEARNERS,
    DRLearner,
    MultiArmUpliftLearner,
    RLearner,
    SLearner,
    TLearner,
    XLearner,
    aipw_pseudo_outcomes,
    estimate_ate,
)
from training.metrics import pehe, qini_coefficient

ARMS = np.array(["no_action", "a", "b"])


def synthetic(n: int = 6000, seed: int = 0):
    """Two actions with known effects, logged by an x1-dependent policy with exact propensities.

    τ_a = 2 where x0 > 0 else 0 (a step); τ_b = 0.5 + x2 (linear, negative for a sixth of the rows).
    Control is logged with probability 0.5 where x1 > 0 and 0.25 elsewhere; a and b share the rest equally.
    x1 also moves the baseline, so the arms differ in baseline (confounded through x1). Noise sd 1.
    """
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x0": rng.normal(size=n), "x1": rng.normal(size=n), "x2": rng.normal(size=n)})
    p_control = np.where(X["x1"] > 0, 0.5, 0.25)
    probs = np.column_stack([p_control, (1 - p_control) / 2, (1 - p_control) / 2])
    arm = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
    treatment = ARMS[arm]
    propensity = probs[np.arange(n), arm]
    tau = np.column_stack([np.where(X["x0"] > 0, 2.0, 0.0), 0.5 + X["x2"].to_numpy()])
    y = 3.0 + X["x1"].to_numpy() + np.where(arm > 0, tau[np.arange(n), np.maximum(arm - 1, 0)], 0.0)
    y = y + rng.normal(size=n)
    return X, treatment, y, propensity, tau


@pytest.fixture(scope="module")
def train():
    return synthetic(seed=0)


@pytest.fixture(scope="module")
def test_data():
    return synthetic(seed=1)


@pytest.fixture(scope="module")
def fitted(train):
    """Every registered learner with its default hyper-parameters (squared error: y can be negative here)."""
    X, treatment, y, propensity, _ = train
    return {
        name: cls(objective="reg:squarederror").fit(X, treatment, y, propensity=propensity)
        for name, cls in LEARNERS.items()
    }


def test_registry_names_every_learner():
    assert LEARNERS == {
        "s_learner": SLearner, "t_learner": TLearner, "x_learner": XLearner, "dr_learner": DRLearner,
        "r_learner": RLearner,
    }
    assert all(issubclass(cls, MultiArmUpliftLearner) for cls in LEARNERS.values())


FITTED_ATTRIBUTES = {
    "s_learner": ["model_"],
    "t_learner": ["models_"],
    "x_learner": ["outcome_models_", "effect_models_treated_", "effect_models_control_", "g_"],
    "dr_learner": ["outcome_models_", "effect_models_", "n_clipped_"],
    "r_learner": ["effect_models_", "propensity_source_"],
}


@pytest.mark.parametrize("name", LEARNERS)
def test_fit_returns_self_and_sets_fitted_attributes(name, fitted, train):
    learner = fitted[name]
    assert learner.arms_ == ["no_action", "a", "b"]
    assert learner.treatments_ == ["a", "b"]
    assert list(learner.feature_names_in_) == ["x0", "x1", "x2"]
    for attribute in FITTED_ATTRIBUTES[name]:
        assert hasattr(learner, attribute)
    X, treatment, y, propensity, _ = train
    fresh = LEARNERS[name](objective="reg:squarederror", n_estimators=5)
    assert fresh.fit(X, treatment, y, propensity=propensity) is fresh


@pytest.mark.parametrize("name", LEARNERS)
def test_recovers_the_average_effects(name, fitted, test_data):
    X, _, _, _, tau = test_data
    uplift = fitted[name].predict_uplift(X)
    assert uplift.shape == (len(X), 2)
    np.testing.assert_array_less(np.abs(uplift.mean(axis=0) - tau.mean(axis=0)), 0.15)


@pytest.mark.parametrize("name", LEARNERS)
def test_ranks_heterogeneous_effects_almost_like_the_true_effect(name, fitted, test_data):
    X, treatment, y, _, tau = test_data
    uplift = fitted[name].predict_uplift(X)
    for j, action in enumerate(["a", "b"]):
        rows = np.isin(treatment, [action, "no_action"])
        treated = (treatment[rows] == action).astype(int)
        learned = qini_coefficient(y[rows], uplift[rows, j], treated)
        true_ranking = qini_coefficient(y[rows], tau[rows, j], treated)
        assert learned > 0.9 * true_ranking > 0, action
    # the step in τ_a (height 2) is found: who benefits from 'a' and who does not. The S-learner shrinks it most
    # (1.40 since weights are normalised: min_child_weight=50 now means 50 rows, not 50 units of 1/p ≈ 15 rows)
    assert uplift[X["x0"] > 0.5, 0].mean() - uplift[X["x0"] < -0.5, 0].mean() > 1.3


@pytest.mark.parametrize("name", LEARNERS)
def test_effects_are_closer_to_the_truth_than_a_constant(name, fitted, test_data):
    X, _, _, _, tau = test_data
    constant = np.tile(tau.mean(axis=0), (len(X), 1))
    assert (pehe(fitted[name].predict_uplift(X), tau) < 0.6 * pehe(constant, tau)).all()


# ---- learner-specific behaviour ------------------------------------------------------------------------------
def test_s_learner_appends_one_column_per_arm(fitted, test_data):
    learner = fitted["s_learner"]
    assert learner.model_.n_features_in_ == 3 + 3
    X = test_data[0]
    outcomes = learner.predict_outcomes(X)
    np.testing.assert_allclose(learner.predict_uplift(X), outcomes[:, 1:] - outcomes[:, :1], rtol=1e-6)


def test_x_learner_g_is_the_population_share_of_the_logged_propensities(fitted, test_data):
    # E[e_control] = (0.5 + 0.25)/2 = 0.375 and E[e_a] = E[e_b] = 0.3125, so g = 0.3125 / 0.6875 = 5/11.
    learner = fitted["x_learner"]
    assert learner.g_ == pytest.approx({"a": 5 / 11, "b": 5 / 11}, abs=0.02)
    X = test_data[0]
    g = learner.predict_g(X)
    np.testing.assert_allclose(g, np.tile([learner.g_["a"], learner.g_["b"]], (len(X), 1)))
    tau_1 = np.column_stack([m.predict(X.to_numpy(np.float32)) for m in learner.effect_models_treated_.values()])
    tau_0 = np.column_stack([m.predict(X.to_numpy(np.float32)) for m in learner.effect_models_control_.values()])
    np.testing.assert_allclose(learner.predict_uplift(X), g * tau_0 + (1 - g) * tau_1, rtol=1e-5, atol=1e-5)


def test_x_learner_classifier_g_follows_the_logging_policy(train, test_data):
    X, treatment, y, propensity, _ = train
    learner = XLearner(objective="reg:squarederror", n_estimators=50, g_model="classifier")
    learner.fit(X, treatment, y, propensity=propensity)
    Xt = test_data[0]
    g = learner.predict_g(Xt)
    # P(a | a or control) = 0.25/0.75 where x1 > 0, 0.375/0.625 where x1 <= 0
    assert g[Xt["x1"] > 0.3].mean(axis=0) == pytest.approx([1 / 3, 1 / 3], abs=0.04)
    assert g[Xt["x1"] < -0.3].mean(axis=0) == pytest.approx([0.6, 0.6], abs=0.04)


def test_x_learner_without_propensity_uses_row_shares(train):
    X, treatment, y, _, _ = train
    learner = XLearner(objective="reg:squarederror", n_estimators=5).fit(X, treatment, y)
    counts = pd.Series(treatment).value_counts()
    assert learner.g_["a"] == pytest.approx(counts["a"] / (counts["a"] + counts["no_action"]))


def test_dr_learner_cross_fits_deterministically(train, test_data):
    X, treatment, y, propensity, _ = train
    Xt = test_data[0]

    def uplift(random_state):
        learner = DRLearner(objective="reg:squarederror", n_estimators=20, random_state=random_state)
        return learner.fit(X, treatment, y, propensity=propensity).predict_uplift(Xt), learner

    first, learner = uplift(0)
    assert len(learner.outcome_models_) == 2 and learner.n_clipped_ == 0
    np.testing.assert_array_equal(first, uplift(0)[0])
    assert not np.array_equal(first, uplift(1)[0])


def test_dr_learner_caps_inverse_propensity_and_counts_the_capped_rows(train):
    X, treatment, y, propensity, _ = train
    tiny = propensity.copy()
    tiny[:30] = 0.01  # 1/p = 100 > 50
    learner = DRLearner(objective="reg:squarederror", n_estimators=5).fit(X, treatment, y, propensity=tiny)
    assert learner.n_clipped_ == 30
    assert learner.set_params(max_weight=100.0).fit(X, treatment, y, propensity=tiny).n_clipped_ == 0
    assert learner.set_params(max_weight=None).fit(X, treatment, y, propensity=tiny).n_clipped_ == 0


# ---- AIPW, ATE and PEHE ----------------------------------------------------------------------------------------
def test_aipw_pseudo_outcomes_by_hand():
    # μ_control = 1, μ_a = 3 everywhere; ψ_a = 2 + 1[a](y − 3)/p − 1[control](y − 1)/p
    outcomes = np.tile([1.0, 3.0], (4, 1))
    treatment = np.array(["c", "a", "c", "a"])
    y = np.array([1.0, 5.0, 2.0, 2.0])
    propensity = np.array([0.5, 0.5, 0.25, 0.5])
    psi, clipped = aipw_pseudo_outcomes(outcomes, treatment, y, propensity, ["c", "a"])
    np.testing.assert_allclose(psi[:, 0], [2.0, 6.0, -2.0, 0.0])
    assert not clipped.any()
    psi, clipped = aipw_pseudo_outcomes(outcomes, treatment, y, propensity, ["c", "a"], max_weight=3.0)
    np.testing.assert_allclose(psi[:, 0], [2.0, 6.0, -1.0, 0.0])
    np.testing.assert_array_equal(clipped, [False, False, True, False])


class FixedOutcomes(MultiArmUpliftLearner):
    """μ_control = 1 and μ_treatment = 3 everywhere."""

    def fit(self, X, treatment, y, sample_weight=None, propensity=None):
        self._validate_fit(X, treatment, y, sample_weight, propensity)
        return self

    def predict_outcomes(self, X):
        return np.tile([1.0, 3.0], (len(self._validate_predict(X)), 1))


def test_estimate_ate_by_hand():
    X, treatment = np.zeros((4, 1)), ["c", "a", "c", "a"]
    y, propensity = [1.0, 5.0, 2.0, 2.0], [0.5, 0.5, 0.25, 0.5]
    learner = FixedOutcomes(control="c", objective="reg:squarederror", min_rows_per_arm=1).fit(X, treatment, y)
    ate = estimate_ate(learner, X, treatment, y, propensity)
    assert list(ate.columns) == ["action", "ate", "lower", "upper", "n"]
    # ψ = [2, 6, −2, 0]: mean 1.5, sd sqrt(35/3); half width 1.959964 · sd / 2
    half = 1.959964 * np.sqrt(35 / 3) / 2
    row = ate.iloc[0]
    assert (row["action"], row["n"]) == ("a", 4)
    assert (row["ate"], row["lower"], row["upper"]) == pytest.approx((1.5, 1.5 - half, 1.5 + half), rel=1e-6)
    wider = estimate_ate(learner, X, treatment, y, propensity, alpha=0.01).iloc[0]
    assert wider["lower"] < row["lower"] and wider["upper"] > row["upper"]


@pytest.mark.parametrize("name", [n for n in LEARNERS if hasattr(LEARNERS[n], "predict_outcomes")])
def test_estimate_ate_interval_covers_the_true_average_effect(name, fitted, test_data):
    X, treatment, y, propensity, tau = test_data
    ate = estimate_ate(fitted[name], X, treatment, y, propensity)
    assert list(ate["action"]) == ["a", "b"]
    assert ((ate["lower"] <= tau.mean(axis=0)) & (tau.mean(axis=0) <= ate["upper"])).all()
    assert (ate["upper"] - ate["lower"] < 0.4).all()  # and it is informative: n = 6000, noise sd 1


def test_estimate_ate_rejects_bad_input(fitted, test_data):
    X, treatment, y, propensity, _ = test_data
    learner = fitted["t_learner"]
    with pytest.raises(ValueError, match="needs the logged propensity"):
        estimate_ate(learner, X, treatment, y, None)
    with pytest.raises(ValueError, match=r"actions \['z'\] are not arms of the fitted learner"):
        estimate_ate(learner, X, np.where(treatment == "a", "z", treatment), y, propensity)
    with pytest.raises(ValueError, match="alpha must be in"):
        estimate_ate(learner, X, treatment, y, propensity, alpha=1.5)
    with pytest.raises(TypeError, match="has no predict_outcomes"):
        estimate_ate(MultiArmUpliftLearner(), X, treatment, y, propensity)
    with pytest.raises(NotFittedError):
        estimate_ate(DRLearner(), X, treatment, y, propensity)


# ---- scikit-learn contract and input checks --------------------------------------------------------------------
@pytest.mark.parametrize("name", LEARNERS)
def test_sklearn_estimator_contract(name):
    cls = LEARNERS[name]
    check_no_attributes_set_in_init(name, cls())
    check_parameters_default_constructible(name, cls())
    check_get_params_invariance(name, cls())
    check_set_params(name, cls())
    learner = cls(n_estimators=7, max_depth=2, random_state=3)
    params = learner.get_params()
    assert params["n_estimators"] == 7 and params["random_state"] == 3 and params["control"] == "no_action"
    assert cls(**params).get_params() == params


@pytest.mark.parametrize("name", LEARNERS)
def test_clone_gives_an_unfitted_copy_with_the_same_parameters(name, fitted):
    copy = clone(fitted[name])
    assert copy.get_params() == fitted[name].get_params()
    assert not hasattr(copy, "treatments_")
    with pytest.raises(NotFittedError):
        copy.predict_uplift(np.zeros((1, 3)))


@pytest.mark.parametrize("name", LEARNERS)
def test_predict_before_fit_raises(name):
    with pytest.raises(NotFittedError):
        LEARNERS[name]().predict_uplift(np.zeros((1, 2)))


@pytest.mark.parametrize("name", LEARNERS)
def test_wrong_feature_count_at_predict(name, fitted):
    with pytest.raises(ValueError, match="X has 2 features; the model was fitted with 3"):
        fitted[name].predict_uplift(np.zeros((1, 2)))


@pytest.mark.parametrize("name", LEARNERS)
@pytest.mark.parametrize(
    ("treatment", "message"),
    [
        (["a"] * 100, "control arm 'no_action' has no rows"),
        (["no_action"] * 99 + ["a"], r"every treatment arm has fewer than min_rows_per_arm=50 rows: \{'a': 1\}"),
        (["no_action"] * 10 + ["a"] * 90, r"control arm 'no_action' has 10 rows, fewer than min_rows_per_arm=50"),
    ],
)
def test_bad_training_input_is_rejected(name, treatment, message):
    with pytest.raises(ValueError, match=message):
        LEARNERS[name]().fit(np.zeros((100, 2)), treatment, np.zeros(100), propensity=np.full(100, 0.5))


def test_dr_learner_requires_the_logged_propensity(train):
    X, treatment, y, _, _ = train
    with pytest.raises(ValueError, match="DRLearner needs propensity: the logged probability"):
        DRLearner().fit(X, treatment, y)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_weight": 0.5}, "max_weight caps 1/propensity"),
        ({"n_folds": 1}, "n_folds must be an int >= 2"),
    ],
)
def test_dr_learner_rejects_bad_settings(train, params, message):
    X, treatment, y, propensity, _ = train
    with pytest.raises(ValueError, match=message):
        DRLearner(**params).fit(X, treatment, y, propensity=propensity)


def test_x_learner_rejects_an_unknown_g_model(train):
    X, treatment, y, propensity, _ = train
    learner = XLearner(g_model="forest")  # __init__ only stores it ...
    with pytest.raises(ValueError, match=r"g_model must be one of \['mean', 'classifier'\]; got 'forest'"):
        learner.fit(X, treatment, y, propensity=propensity)  # ... fit checks it


@pytest.mark.parametrize("name", LEARNERS)
def test_conversion_outcome(name):
    """0/1 outcomes: logistic outcome models; uplift is a difference of probabilities."""
    rng = np.random.default_rng(2)
    n = 2000
    X = rng.normal(size=(n, 2))
    treatment = rng.choice(["no_action", "a"], size=n)
    y = (rng.random(n) < np.where(treatment == "a", 0.4, 0.2)).astype(float)
    learner = LEARNERS[name](outcome="conversion", n_estimators=30).fit(X, treatment, y, propensity=np.full(n, 0.5))
    uplift = learner.predict_uplift(X)
    assert np.all(np.abs(uplift) <= 1.0)
    assert uplift.mean() == pytest.approx(0.2, abs=0.06)
