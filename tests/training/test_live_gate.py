"""The promotion gate on the live decision log: paired off-policy comparison of challenger and champion."""

import numpy as np
import pandas as pd
import pytest

from serving.policy.exploration import Exploration
from training.live_gate import LiveGateConfig, candidate_scores, evaluate_on_log, live_gate, net_reward
from training.logged_training import LoggedRows
from training.pyfunc import UpliftModel

ACTIONS = ["no_action", "left", "right"]
COSTS = {"left": 0.1, "right": 0.1}
EXPLORE = Exploration(method="epsilon_greedy", epsilon=0.1)


class KnownUplift:
    """A learner whose uplift is a fixed function of x0 (sign flips the preference): the gate's test double."""

    control = "no_action"
    treatments_ = ["left", "right"]

    def __init__(self, sign: float = 1.0, offset: float = 0.0):
        self.sign, self.offset = sign, offset

    def predict_uplift(self, X: np.ndarray) -> np.ndarray:
        x0 = np.asarray(X, dtype=np.float32)[:, 0]
        return np.column_stack([self.sign * (1.0 - 2 * x0), self.sign * (2 * x0 - 1.0)]).astype(np.float32) + self.offset


def model(sign: float = 1.0, offset: float = 0.0) -> UpliftModel:
    return UpliftModel(KnownUplift(sign, offset), ["x0", "x1"], COSTS)


def logged_world(n: int = 4000, seed: int = 0, logging_epsilon: float = 0.6) -> LoggedRows:
    """Rounds logged by an epsilon-greedy policy around the *true* best action; true uplift = KnownUplift(+1)."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x0": rng.random(n), "x1": rng.random(n)}).astype(np.float32)
    truth = np.column_stack([np.zeros(n), KnownUplift().predict_uplift(X.to_numpy())])  # per ACTIONS
    best = truth.argmax(axis=1)
    probs = np.full((n, 3), logging_epsilon / 3)
    probs[np.arange(n), best] += 1 - logging_epsilon
    chosen = np.array([rng.choice(3, p=p) for p in probs])
    revenue = 1.0 + truth[np.arange(n), chosen] + rng.normal(0, 0.5, n)
    return LoggedRows(
        X=X, action=np.array(ACTIONS, dtype=object)[chosen], propensity=probs[np.arange(n), chosen],
        candidates=[list(ACTIONS)] * n, probabilities=probs.tolist(), revenue=revenue, converted=np.ones(n, int),
        decision_id=np.array([f"d{i}" for i in range(n)], dtype=object), ts=np.arange(n, dtype=float),
        model_version=np.full(n, "1", dtype=object),
    )


def test_candidate_scores_are_servings_uplift_minus_cost_with_the_bonus():
    rows = logged_world(n=3)
    m = model()
    m.uplift_se = {"left": 0.5, "right": 0.0}
    uplift = m.uplift(rows.X.to_numpy())
    scores = candidate_scores(m, rows, uncertainty_bonus=2.0)
    for i in range(3):
        assert scores[i] == [0.0, float(uplift[i, 0]) - 0.1 + 1.0, float(uplift[i, 1]) - 0.1]
    assert list(net_reward(rows, COSTS)) == list(rows.revenue - np.where(rows.action == "no_action", 0.0, 0.1))


def test_a_better_challenger_passes_and_a_worse_one_is_refused_with_both_estimators_named():
    rows = logged_world()
    good, bad = model(+1), model(-1)
    better = live_gate(evaluate_on_log(rows, good, bad, EXPLORE, ACTIONS))
    assert better.passed and better.reasons == ()
    assert better.figures["difference_dr_lower"] > 0.5 and better.figures["difference_snipw_lower"] > 0.5
    worse = live_gate(evaluate_on_log(rows, bad, good, EXPLORE, ACTIONS))
    assert not worse.passed
    assert [r.split(":")[0] for r in worse.reasons] == ["dr", "snipw"]
    assert "is not above the margin 0.0000" in worse.reasons[0]
    assert worse.evaluation.differences["dr"].difference < -0.5


def test_a_tie_or_a_retrain_that_changes_nothing_is_not_promoted():
    rows = logged_world()
    tie = live_gate(evaluate_on_log(rows, model(+1), model(+1), EXPLORE, ACTIONS))
    assert not tie.passed and tie.evaluation.differences["dr"].difference == 0.0
    assert tie.evaluation.differences["dr"].lower == 0.0  # identical policies: nothing to add, lower bound 0, not > 0


def test_a_small_effective_sample_size_refuses_with_that_reason():
    rows = logged_world(n=600, logging_epsilon=0.03)  # logged nearly greedily: a contrary policy is rarely matched
    verdict = live_gate(evaluate_on_log(rows, model(-1), None, EXPLORE, ACTIONS), LiveGateConfig(min_ess=300))
    ess = verdict.figures["challenger_ess"]
    assert ess < 300 and any(r.startswith(f"effective sample size {ess:.0f} < 300") for r in verdict.reasons)


def test_rolled_back_same_dataset_and_calibration_are_reasons_of_their_own():
    rows = logged_world(n=1500)
    verdict = live_gate(
        evaluate_on_log(rows, model(+1), model(-1), EXPLORE, ACTIONS), calibration_failures=["slope 0.2"],
        same_dataset_as_champion=True, rolled_back=True,
    )
    assert not verdict.passed
    assert verdict.reasons == (
        "this version was rolled back; promote it by hand (python -m training.cli promote N)",
        "trained on the champion's dataset (same dataset_hash): nothing new to learn from",
        "uplift calibration: slope 0.2",
    )


def test_without_a_champion_the_challenger_is_judged_against_the_logged_policy():
    rows = logged_world()
    evaluation = evaluate_on_log(rows, model(+1), None, EXPLORE, ACTIONS)
    # the logged policy's own estimates are on-policy: its weights are all 1, SNIPW is the window's mean reward
    assert evaluation.champion["snipw"].value == pytest.approx(rows.revenue.mean() - 0.1 * (rows.action != "no_action").mean())
    assert evaluation.champion["snipw"].ess == pytest.approx(len(rows))
    assert live_gate(evaluation).passed  # the greedier challenger beats 60 % exploration


def test_candidates_outside_the_action_ids_are_refused():
    rows = logged_world(n=5)
    with pytest.raises(ValueError, match=r"logged candidates \['left'\] are not in action_ids"):
        evaluate_on_log(rows, model(), None, EXPLORE, ["no_action", "right"])
