"""OffPolicyEvaluation runs every estimator on the same feedback, with OBP's methods and keys."""

import numpy as np
import pandas as pd
import pytest

from tests.training.ope.examples import Q_A, A
from training.ope import (
    DirectMethod,
    DoublyRobust,
    InverseProbabilityWeighting,
    OffPolicyEstimate,
    OffPolicyEvaluation,
    SelfNormalizedInverseProbabilityWeighting,
)

FEEDBACK = {"action": A["action"], "reward": A["reward"], "pscore": A["pscore"], "position": None,
            "context": np.zeros((4, 1))}
ESTIMATORS = [
    InverseProbabilityWeighting(), SelfNormalizedInverseProbabilityWeighting(), DirectMethod(), DoublyRobust(),
]


def test_values_equal_each_estimators_own():
    ope = OffPolicyEvaluation(FEEDBACK, ESTIMATORS)
    values = ope.estimate_policy_values(A["action_dist"], Q_A)
    assert values == pytest.approx({"ipw": 1.375, "snipw": 5.5 / 7.5, "dm": 0.85625, "dr": 0.35625}, abs=1e-15)


def test_reward_model_per_estimator_as_a_dict():
    ope = OffPolicyEvaluation(FEEDBACK, [DirectMethod(), DirectMethod(estimator_name="dm-zero")])
    values = ope.estimate_policy_values(A["action_dist"], {"dm": Q_A, "dm-zero": np.zeros_like(Q_A)})
    assert values == pytest.approx({"dm": 0.85625, "dm-zero": 0.0})


def test_intervals_summaries_and_errors_follow_obp():
    ope = OffPolicyEvaluation(FEEDBACK, ESTIMATORS)
    intervals = ope.estimate_intervals(A["action_dist"], Q_A, n_bootstrap_samples=50, random_state=1)
    assert set(intervals) == {"ipw", "snipw", "dm", "dr"}
    assert set(intervals["ipw"]) == {"mean", "95.0% CI (lower)", "95.0% CI (upper)"}
    values, bounds = ope.summarize_off_policy_estimates(A["action_dist"], Q_A, n_bootstrap_samples=50, random_state=1)
    assert isinstance(values, pd.DataFrame) and list(values.columns) == [
        "estimated_policy_value", "relative_estimated_policy_value"]
    assert values.loc["ipw", "relative_estimated_policy_value"] == pytest.approx(1.375 / 1.0)  # mean reward = 1
    assert bounds.shape == (4, 3)
    se = ope.evaluate_performance_of_estimators(1.0, A["action_dist"], Q_A)
    assert se["ipw"] == pytest.approx(0.375**2)
    ree = ope.summarize_estimators_comparison(0.5, A["action_dist"], Q_A, metric="relative-ee")
    assert ree.loc["dr", "relative-ee"] == pytest.approx(abs(0.35625 - 0.5) / 0.5)


def test_diagnostics_for_every_estimator():
    ope = OffPolicyEvaluation(FEEDBACK, ESTIMATORS)
    estimates = ope.estimate_with_diagnostics(A["action_dist"], Q_A, n_bootstrap_samples=50, random_state=0)
    assert all(isinstance(e, OffPolicyEstimate) for e in estimates.values())
    assert estimates["dm"].max_weight == 4.0  # DM gets action and pscore from the feedback for its diagnostics
    table = ope.summarize_with_diagnostics(A["action_dist"], Q_A)
    assert list(table.index) == ["ipw", "snipw", "dm", "dr"] and {"ess", "max_weight", "se"} <= set(table.columns)


def test_orchestrator_errors():
    with pytest.raises(ValueError, match="lacks 'reward'"):
        OffPolicyEvaluation({"action": A["action"]}, ESTIMATORS)
    with pytest.raises(ValueError, match="two estimators are named 'ipw'"):
        OffPolicyEvaluation(FEEDBACK, [InverseProbabilityWeighting(), InverseProbabilityWeighting(lambda_=5.0)])
    with pytest.raises(ValueError, match="need `estimated_rewards_by_reg_model`"):
        OffPolicyEvaluation(FEEDBACK, ESTIMATORS).estimate_policy_values(A["action_dist"])
    with pytest.raises(ValueError, match="metric"):
        OffPolicyEvaluation(FEEDBACK, ESTIMATORS).evaluate_performance_of_estimators(
            1.0, A["action_dist"], Q_A, metric="mae"
        )
