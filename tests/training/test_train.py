import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from training.learners import RLearner, TLearner, estimate_ate
from training.learners.selection import CausalModelSelector
from training.train import cross_fitted_uplift, holdout_mask, split_training_set, train_uplift


def test_holdout_is_user_level_deterministic_and_sized():
    users = np.arange(20_000)
    mask = holdout_mask(users, 0.2, seed=0)
    assert abs(mask.mean() - 0.2) < 0.01
    np.testing.assert_array_equal(mask, holdout_mask(users, 0.2, seed=0))
    assert (mask != holdout_mask(users, 0.2, seed=1)).any()
    # different seeds give independent splits: the overlap is about 0.2 × 0.2
    assert abs((mask & holdout_mask(users, 0.2, seed=1)).mean() - 0.04) < 0.01
    repeated = np.repeat(users[:50], 3)
    assert (holdout_mask(repeated, 0.2).reshape(50, 3).std(axis=1) == 0).all()


def test_text_user_ids_of_the_decision_log_split_by_user_too():
    keys = np.array([f"{i:032x}" for i in range(20_000)], dtype=object)  # user_key-like hex text
    mask = holdout_mask(keys, 0.2, seed=0)
    assert abs(mask.mean() - 0.2) < 0.01 and (mask == holdout_mask(keys.copy(), 0.2, seed=0)).all()
    assert (holdout_mask(np.repeat(keys[:50], 3), 0.2).reshape(50, 3).std(axis=1) == 0).all()
    # integer ids keep their split (the batch pipeline's holdouts do not move)
    assert holdout_mask(np.arange(5), 0.5, seed=3).tolist() == holdout_mask(np.arange(5).astype(np.int32), 0.5, 3).tolist()


def test_train_reports_holdout_qini_per_action_and_refuses_unknown_actions():
    rng = np.random.default_rng(0)
    n = 3000
    frame = pd.DataFrame({
        "user_id": np.arange(n), "event_timestamp": pd.Timestamp("2026-10-02", tz="UTC"),
        "action_id": rng.choice(["no_action", "p"], size=n), "propensity": 0.5, "f": rng.normal(size=n),
    })
    frame["label_revenue"] = np.maximum(0, frame["f"]) * (frame["action_id"] == "p") + rng.exponential(size=n)
    forced = frame.head(100).assign(action_id="no_action", propensity=1.0, user_id=lambda f: f["user_id"] + n)
    frame = pd.concat([frame, forced], ignore_index=True)
    trained = train_uplift(frame, ["f"], {"p": 0.1}, TLearner(n_estimators=30), holdout_fraction=0.25)
    assert set(trained.metrics) >= {
        "holdout_qini_p", "holdout_qini_mean", "holdout_auuc_ipw_mean", "holdout_calibration_slope",
        "holdout_incremental_net_value_snips", "holdout_uplift_at_30pct_mean", "n_train_rows", "n_holdout_rows",
    }
    # rows the logging policy could not randomise (propensity 1) are neither fitted nor evaluated
    assert trained.metrics["n_deterministic_rows_skipped"] == 100
    m = trained.metrics
    assert m["n_train_rows"] + m["n_holdout_rows"] == n
    assert m["n_holdout_rows"] == pytest.approx(0.25 * n, rel=0.1)
    assert trained.metrics["holdout_qini_p"] > 0
    assert set(trained.figures) == {"holdout_qini_curves", "holdout_uplift_curves", "holdout_uplift_calibration"}
    assert set(trained.calibration["action"]) == {"p"} and len(trained.calibration) == 5
    # the serving bonus's s: the AIPW standard error of p's average uplift on the holdout rows
    test = split_training_set(frame, 0.25).test
    ate = estimate_ate(trained.model.learner, test[["f"]], test["action_id"], test["label_revenue"], test["propensity"])
    assert trained.model.uplift_se == {"p": pytest.approx((ate["upper"][0] - ate["ate"][0]) / norm.ppf(0.975))}
    assert 0.02 < trained.model.uplift_se["p"] < 0.3
    with pytest.raises(ValueError, match=r"actions \['p'\] were logged but are not in the action catalogue"):
        train_uplift(frame, ["f"], {}, TLearner(n_estimators=5))


def test_without_recalibration_the_model_serves_the_learners_own_uplift():
    rng = np.random.default_rng(1)
    n = 2000
    frame = pd.DataFrame({
        "user_id": np.arange(n), "event_timestamp": pd.Timestamp("2026-10-02", tz="UTC"),
        "action_id": rng.choice(["no_action", "p"], size=n), "propensity": 0.5, "f": rng.normal(size=n),
    })
    frame["label_revenue"] = np.maximum(0, frame["f"]) * (frame["action_id"] == "p") + rng.exponential(size=n)
    X = frame[["f"]].to_numpy(np.float32)[:50]
    raw = train_uplift(frame, ["f"], {"p": 0.1}, TLearner(n_estimators=30), recalibration="none")
    assert raw.model.recalibrator is None and raw.metrics["recalibrated"] == 0.0
    np.testing.assert_array_equal(raw.model.uplift(X), raw.model.learner.predict_uplift(X))
    recalibrated = train_uplift(frame, ["f"], {"p": 0.1}, TLearner(n_estimators=30))
    assert recalibrated.metrics["recalibrated"] == 1.0
    # the same fit underneath; the default maps its uplift through the per-action line
    recalibrator = recalibrated.model.recalibrator
    np.testing.assert_array_equal(recalibrated.model.learner.predict_uplift(X), raw.model.learner.predict_uplift(X))
    np.testing.assert_allclose(recalibrated.model.uplift(X),
                               raw.model.learner.predict_uplift(X) * recalibrator.slope_ + recalibrator.intercept_)
    shrunk = train_uplift(frame, ["f"], {"p": 0.1}, TLearner(n_estimators=30), recalibration="shrunk")
    assert shrunk.model.recalibrator.shrink and shrunk.metrics["recalibrated"] == 1.0
    with pytest.raises(ValueError, match=r"recalibration must be one of \['linear', 'shrunk', 'none'\]; got 'isotonic'"):
        train_uplift(frame, ["f"], {"p": 0.1}, TLearner(n_estimators=30), recalibration="isotonic")


def test_cross_fitted_uplift_scores_each_row_with_a_model_that_did_not_see_its_user():
    rng = np.random.default_rng(1)
    n = 1200
    X = pd.DataFrame({"f": rng.normal(size=n)})
    actions = rng.choice(["no_action", "p"], size=n)
    y = rng.exponential(size=n)
    users = np.arange(n) // 2  # two rows per user: both must land in the same fold
    learner = TLearner(n_estimators=10).fit(X, actions, y, propensity=np.full(n, 0.5))
    oof = cross_fitted_uplift(learner, X, actions, y, np.full(n, 0.5), users, seed=0)
    assert oof.shape == (n, 1) and np.isfinite(oof).all()
    assert not np.allclose(oof[:, 0], learner.predict_uplift(X)[:, 0])  # not the in-sample predictions


@pytest.mark.parametrize("make", [
    lambda: RLearner(n_estimators=20),
    lambda: CausalModelSelector(candidates={"r": RLearner(n_estimators=20), "t": TLearner(n_estimators=20)}),
], ids=["r_learner", "selector"])
def test_learners_without_outcome_models_train_with_an_ipw_standard_error(make):
    """The R-learner and a selection have no per-arm outcome models: the holdout's uplift standard error (the
    serving bonus's s) falls back to plain IPW instead of failing the training run."""
    rng = np.random.default_rng(3)
    n = 3000
    frame = pd.DataFrame({"user_id": np.arange(n), "f": rng.normal(size=n),
                          "action_id": rng.choice(["no_action", "p"], size=n), "propensity": 0.5})
    frame["event_timestamp"] = pd.Timestamp("2026-10-01", tz="UTC")
    frame["label_revenue"] = np.maximum(0, frame["f"]) * (frame["action_id"] == "p") + rng.exponential(size=n)
    trained = train_uplift(frame, ["f"], {"p": 0.1}, make(), holdout_fraction=0.25)
    assert set(trained.model.uplift_se) == {"p"} and 0.02 < trained.model.uplift_se["p"] < 0.5
