"""The per-user uncertainty σ(x, a): bootstrap refits distilled into one small regressor at training time
(training/train.py), scored the same by the model (training/pyfunc.py), by serving's compiled forest
(serving/decision/scoring.py, Champion.net_uplift) and by the live gate (training/live_gate.py)."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from serving.decision.scoring import CompiledUpliftSd, sd_scorer
from serving.decision.service import Champion
from serving.policy.exploration import Exploration, action_probabilities
from serving.policy.uncertainty import with_bonus
from training.learners import TLearner
from training.live_gate import candidate_scores, candidate_spreads, policy_action_dist
from training.logged_training import LoggedRows
from training.registry import load_alias, log_and_register
from training.train import bootstrap_uplift_sd, train_uplift

ACTIONS = ["no_action", "p", "q"]


def shop(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    """Two treatments (q logged less often than p) whose effects grow with |f|, which is rare beyond ±2."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"user_id": np.arange(n), "f": rng.normal(size=n), "g": rng.normal(size=n)})
    shown = rng.choice(3, size=n, p=[0.45, 0.45, 0.1])
    frame["action_id"] = np.array(ACTIONS)[shown]
    frame["propensity"] = np.array([0.45, 0.45, 0.1])[shown]
    frame["event_timestamp"] = pd.Timestamp("2026-10-01", tz="UTC")
    effect = np.where(shown == 1, np.maximum(0, frame["f"]), np.where(shown == 2, 0.3 * np.abs(frame["f"]), 0.0))
    frame["label_revenue"] = effect + rng.exponential(size=n)
    return frame


@pytest.fixture(scope="module")
def trained():
    return train_uplift(shop(), ["f", "g"], {"p": 0.1, "q": 0.2}, TLearner(n_estimators=30), holdout_fraction=0.25,
                        uncertainty_replicates=6)


def test_without_replicates_the_uncertainty_is_the_holdout_standard_error_for_every_user():
    plain = train_uplift(shop(1500), ["f", "g"], {"p": 0.1, "q": 0.2}, TLearner(n_estimators=10))
    assert plain.model.uplift_sd_model is None and "uncertainty_replicates" not in plain.metrics
    sd = plain.model.uplift_sd(np.zeros((3, 2), np.float32))
    np.testing.assert_array_equal(sd, np.tile([plain.model.uplift_se["p"], plain.model.uplift_se["q"]], (3, 1)))
    assert sd_scorer(plain.model) is None


def test_the_distilled_uncertainty_is_per_user_and_per_action(trained):
    model = trained.model
    assert model.uplift_sd_model is not None and trained.metrics["uncertainty_replicates"] == 6.0
    grid = np.array([[0.0, 0.0], [3.0, 0.0], [-3.0, 0.0]], np.float32)
    sd = model.uplift_sd(grid)
    assert sd.shape == (3, 2) and (sd > 0).all() and np.isfinite(sd).all()
    assert (sd[1:] > sd[0]).all()  # users where the data are thin are less certain
    typical = model.uplift_sd(shop(500, seed=1)[["f", "g"]].to_numpy(np.float32))
    assert (typical.std(axis=0) > 0.1 * typical.mean(axis=0)).all()  # not one constant per action
    assert not np.allclose(typical[:, 0], typical[:, 1], rtol=0.05)  # nor one per user


def test_bootstrap_spread_is_zero_for_a_learner_that_ignores_its_data_and_needs_two_replicates():
    frame = shop(600)
    X, actions, y = frame[["f", "g"]], frame["action_id"].to_numpy(), frame["label_revenue"].to_numpy()
    learner = TLearner(n_estimators=5).fit(X, actions, y, propensity=frame["propensity"].to_numpy())
    with pytest.raises(ValueError, match="at least 2 bootstrap replicates; got 1"):
        bootstrap_uplift_sd(learner, X, actions, y, frame["propensity"].to_numpy(), frame["user_id"].to_numpy(), 1, 0)
    constant = np.ones_like(y)  # every refit predicts the same (no signal at all): σ = 0 everywhere
    sd = bootstrap_uplift_sd(learner, X, actions, constant, frame["propensity"].to_numpy(),
                             frame["user_id"].to_numpy(), 3, 0)
    assert sd.shape == (600, 2) and np.abs(sd).max() < 1e-6


def test_serving_scores_the_uncertainty_model_bit_for_bit(trained):
    model = trained.model
    rng = np.random.default_rng(2)
    rows = rng.normal(0.0, 2.0, size=(200, 2)).astype(np.float32)
    rows[rng.random(rows.shape) < 0.1] = np.nan  # missing values follow the trees' default directions
    compiled = CompiledUpliftSd(model).uplift_sd(rows)
    assert compiled.tolist() == model.uplift_sd(rows).tolist()
    assert sd_scorer(model).__self__.__class__ is CompiledUpliftSd


def test_the_uncertainty_model_is_registered_and_loaded_back_with_the_model(trained, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    X = shop(20, seed=4)[["f", "g"]]
    log_and_register(model=trained.model, tracking_uri=uri, experiment="sd", artifact_dir=tmp_path / "artifacts",
                     model_name="m", feature_service="uplift_v1", params={}, metrics={}, tags={}, input_example=X,
                     alias="champion")
    loaded, _, _ = load_alias(uri, "m")
    rows = X.to_numpy(np.float32)
    assert loaded.uplift_sd(rows).tolist() == trained.model.uplift_sd(rows).tolist()
    assert sd_scorer(loaded)(rows).tolist() == trained.model.uplift_sd(rows).tolist()


def test_the_gate_replays_servings_scores_uncertainties_and_thompson_probabilities(trained):
    model = trained.model
    frame = shop(50, seed=3)
    X = frame[["f", "g"]].astype(np.float32)
    candidates = [ACTIONS, ["no_action", "q"], ["p", "no_action", "q"]] * 16 + [ACTIONS, ACTIONS]
    rows = LoggedRows(X=X, action=np.array(["no_action"] * 50, dtype=object), propensity=np.full(50, 0.5),
                      candidates=candidates, probabilities=[[1 / len(c)] * len(c) for c in candidates],
                      revenue=np.zeros(50), converted=np.zeros(50, int),
                      decision_id=np.array([f"d{i}" for i in range(50)], dtype=object), ts=np.arange(50.0),
                      model_version=np.full(50, "1", dtype=object))
    champion = Champion(model=model, ref=SimpleNamespace(version="1"), features=None, freshness=())
    thompson = Exploration("thompson", floor=0.02)
    dist = policy_action_dist(model, rows, thompson, ACTIONS, uncertainty_bonus=0.5)
    spreads, scores = candidate_spreads(model, rows), candidate_scores(model, rows, 0.5)
    for i, names in enumerate(candidates):
        values = X.to_numpy()[i : i + 1]
        mu, s = champion.net_uplift(names, champion.score(values)[0], champion.spread(values)[0])
        assert s.tolist() == spreads[i] and s[names.index("no_action")] == 0.0
        u = with_bonus(mu, s, 0.5)
        assert u.tolist() == scores[i]
        served = action_probabilities(u, thompson, s)
        assert dist[i, [ACTIONS.index(a) for a in names], 0].tolist() == served.tolist()
