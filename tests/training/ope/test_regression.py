"""RegressionModel: exact recovery per slot, cross-fitting (a row's prediction never sees its own reward), errors."""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression
from xgboost import XGBRegressor

from training.ope import RegressionModel


def _linear_log(n=300, seed=0):
    """Noise-free reward 1 + 2·x0 − x1 + 0.5·[a = 1] − 1.0·[slot 1]: linear in [x, one-hot(a)] per slot."""
    rng = np.random.default_rng(seed)
    context = rng.normal(size=(n, 2))
    action = rng.integers(0, 3, size=n)
    position = rng.integers(0, 2, size=n)
    reward = 1 + 2 * context[:, 0] - context[:, 1] + 0.5 * (action == 1) - 1.0 * position
    return context, action, position, reward


def test_each_slot_gets_its_own_model_and_recovers_a_linear_reward():
    context, action, position, reward = _linear_log()
    q_hat = RegressionModel(LinearRegression(), n_actions=3, len_list=2).fit_predict(
        context, action, reward, position=position, n_folds=3, random_state=0
    )
    assert q_hat.shape == (300, 3, 2)
    base = 1 + 2 * context[:, 0] - context[:, 1]
    expected = base[:, None, None] + np.array([0.0, 0.5, 0.0])[None, :, None] - np.array([0.0, 1.0])[None, None, :]
    np.testing.assert_allclose(q_hat, expected, atol=1e-9)


def test_a_rows_prediction_does_not_depend_on_its_own_reward():
    context, action, _, reward = _linear_log(seed=1)
    noisy = reward + np.random.default_rng(2).normal(size=reward.size)
    model = RegressionModel(LinearRegression(), n_actions=3)
    before = model.fit_predict(context, action, noisy, n_folds=4, random_state=5)
    changed = noisy.copy()
    changed[17] += 1000.0
    after = model.fit_predict(context, action, changed, n_folds=4, random_state=5)
    np.testing.assert_array_equal(after[17], before[17])  # row 17's fold model never saw row 17
    assert np.abs(after - before).max() > 1.0  # …but the models that did see it moved other rows
    in_sample = model.fit_predict(context, action, changed, n_folds=1)
    assert np.abs(in_sample[17] - model.fit_predict(context, action, noisy, n_folds=1)[17]).max() > 1.0


def test_classifier_predicts_probabilities_and_xgboost_works():
    rng = np.random.default_rng(3)
    context = rng.normal(size=(400, 2))
    action = rng.integers(0, 2, size=400)
    click = (rng.random(400) < 1 / (1 + np.exp(-context[:, 0] - action))).astype(float)
    q_hat = RegressionModel(LogisticRegression(), n_actions=2).fit_predict(context, action, click, random_state=0)
    assert ((q_hat > 0) & (q_hat < 1)).all()
    assert q_hat[:, 1].mean() > q_hat[:, 0].mean()  # action 1 raises the logit by 1
    boosted = RegressionModel(XGBRegressor(n_estimators=20, max_depth=2), n_actions=2).fit_predict(
        context, action, click, random_state=0
    )
    assert boosted.shape == (400, 2, 1) and np.isfinite(boosted).all()


def test_importance_weighted_fit_needs_the_target_policy():
    context, action, _, reward = _linear_log()
    model = RegressionModel(LinearRegression(), n_actions=3, fitting_method="iw")
    with pytest.raises(ValueError, match="needs `action_dist`"):
        model.fit(context, action, reward)
    uniform = np.full((300, 3, 1), 1 / 3)
    q_hat = model.fit_predict(context, action, reward, pscore=np.full(300, 1 / 3), action_dist=uniform)
    assert q_hat.shape == (300, 3, 1)


def test_errors_say_what_to_do():
    context, action, position, reward = _linear_log()
    with pytest.raises(NotFittedError, match="call fit"):
        RegressionModel(LinearRegression(), n_actions=3).predict(context)
    with pytest.raises(ValueError, match="scikit-learn style estimator"):
        RegressionModel(object(), n_actions=3)
    with pytest.raises(ValueError, match=r"`fitting_method` must be one of"):
        RegressionModel(LinearRegression(), n_actions=3, fitting_method="magic")
    with pytest.raises(ValueError, match=r"`position` must be in \[0, len_list = 2\)"):
        RegressionModel(LinearRegression(), n_actions=3, len_list=2).fit(context, action, reward, position=position + 1)
    with pytest.raises(ValueError, match="no training rounds at slot 1"):
        RegressionModel(LinearRegression(), n_actions=3, len_list=2).fit(context, action, reward, position=0 * position)
    with pytest.raises(ValueError, match="single reward value.*classifier cannot be fitted"):
        RegressionModel(LogisticRegression(), n_actions=3).fit(context, action, np.zeros(300))
    with pytest.raises(ValueError, match="n_folds"):
        RegressionModel(LinearRegression(), n_actions=3).fit_predict(context, action, reward, n_folds=0)
    with pytest.raises(ValueError, match="one row per action"):
        RegressionModel(LinearRegression(), n_actions=3, action_context=np.eye(2))
