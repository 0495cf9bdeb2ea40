"""Known-effect tests on synthetic data, in the style of causalml's meta-learner tests."""

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from training.metrics import qini_coefficient
from training.learners import TLearner


def synthetic(n: int = 6000, seed: int = 0):
    """Two actions: 'a' helps when x0 > 0 (+2), 'b' always helps a little (+0.5); outcome noise sd 1."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x0": rng.normal(size=n), "x1": rng.normal(size=n)})
    treatment = rng.choice(["no_action", "a", "b"], size=n)
    tau_a = np.where(X["x0"] > 0, 2.0, 0.0)
    tau_b = np.full(n, 0.5)
    base = 3.0 + X["x1"].to_numpy()
    y = base + np.where(treatment == "a", tau_a, 0) + np.where(treatment == "b", tau_b, 0) + rng.normal(size=n)
    return X, treatment, y, np.column_stack([tau_a, tau_b])


@pytest.fixture(scope="module")
def fitted():
    X, treatment, y, tau = synthetic()
    learner = TLearner(objective="reg:squarederror", n_estimators=150, max_depth=3, learning_rate=0.1)
    return learner.fit(X, treatment, y), synthetic(seed=1)


def test_fit_returns_self_and_sets_fitted_attributes(fitted):
    learner, _ = fitted
    assert learner.arms_ == ["no_action", "a", "b"]
    assert learner.treatments_ == ["a", "b"]
    assert list(learner.feature_names_in_) == ["x0", "x1"]
    assert set(learner.models_) == {"no_action", "a", "b"}


def test_recovers_the_average_effects(fitted):
    learner, (X, _, _, tau) = fitted
    uplift = learner.predict_uplift(X)
    assert uplift.shape == (len(X), 2)
    ate = uplift.mean(axis=0)
    assert abs(ate[0] - tau[:, 0].mean()) < 0.15
    assert abs(ate[1] - tau[:, 1].mean()) < 0.15


def test_ranks_heterogeneous_effects_better_than_random(fitted):
    learner, (X, treatment, y, tau) = fitted
    uplift = learner.predict_uplift(X)
    rows = np.isin(treatment, ["a", "no_action"])
    treated = (treatment[rows] == "a").astype(int)
    learned = qini_coefficient(y[rows], uplift[rows, 0], treated)
    true_ranking = qini_coefficient(y[rows], tau[rows, 0], treated)
    # Normalised by the realised-outcome "perfect" curve, even the true effect scores well below 1 on noisy data.
    assert learned > 0.9 * true_ranking > 0
    # and it separates who benefits from 'a'
    assert uplift[X["x0"] > 0.5, 0].mean() - uplift[X["x0"] < -0.5, 0].mean() > 1.5


def test_get_params_round_trip_is_what_init_received():
    learner = TLearner(n_estimators=7, max_depth=2)
    params = learner.get_params()
    assert params["n_estimators"] == 7 and params["max_depth"] == 2 and params["control"] == "no_action"
    assert TLearner(**params).get_params() == params


def test_predict_before_fit_raises():
    with pytest.raises(NotFittedError):
        TLearner().predict_uplift(np.zeros((1, 2)))


@pytest.mark.parametrize(
    ("treatment", "weight", "message"),
    [
        (["a"] * 100, None, "control arm 'no_action' has no rows"),
        (["no_action"] * 99 + ["a"], None, r"every treatment arm has fewer than min_rows_per_arm=50 rows: \{'a': 1\}"),
        (["no_action", "a"] * 50, [0.0] * 100, "sample_weight must be finite and > 0"),
    ],
)
def test_bad_training_input_is_rejected(treatment, weight, message):
    X = np.zeros((100, 2))
    with pytest.raises(ValueError, match=message):
        TLearner().fit(X, treatment, np.zeros(100), sample_weight=weight)


def test_wrong_feature_count_at_predict(fitted):
    learner, _ = fitted
    with pytest.raises(ValueError, match="X has 3 features; the model was fitted with 2"):
        learner.predict_uplift(np.zeros((1, 3)))
