"""Off-policy evaluation in Open Bandit Pipeline's conventions: estimators, reward models, action_dist builders.

Code written for OBP (obp.ope) runs against these names: `action_dist` (n_rounds, n_actions, len_list), `action`,
`reward`, `position` (0-based slot), `pscore`, `estimated_rewards_by_reg_model` (n_rounds, n_actions, len_list);
estimators with `estimate_policy_value`, `estimate_interval` (bootstrap) and `_estimate_round_rewards`. Beyond OBP
each estimator gives an analytic interval and weight diagnostics (`estimate_with_diagnostics`). Formulas are in
the docstrings of `estimators`, `intervals`, `regression` and `policies`.
"""

from training.ope.estimators import (
    BaseOffPolicyEstimator,
    DirectMethod,
    DoublyRobust,
    DoublyRobustWithShrinkage,
    InverseProbabilityWeighting,
    OffPolicyEstimate,
    SelfNormalizedDoublyRobust,
    SelfNormalizedInverseProbabilityWeighting,
    SwitchDoublyRobust,
    effective_sample_size,
)
from training.ope.intervals import estimate_confidence_interval_by_bootstrap
from training.ope.meta import OffPolicyEvaluation
from training.ope.policies import (
    action_dist_from_candidates,
    action_dist_from_scores,
    bandit_feedback_from_decisions,
    bernoulli_ts_action_dist,
    convert_to_action_dist,
    epsilon_greedy_action_dist,
    softmax_action_dist,
)
from training.ope.regression import RegressionModel

__all__ = [
    "BaseOffPolicyEstimator",
    "DirectMethod",
    "DoublyRobust",
    "DoublyRobustWithShrinkage",
    "InverseProbabilityWeighting",
    "OffPolicyEstimate",
    "OffPolicyEvaluation",
    "RegressionModel",
    "SelfNormalizedDoublyRobust",
    "SelfNormalizedInverseProbabilityWeighting",
    "SwitchDoublyRobust",
    "action_dist_from_candidates",
    "action_dist_from_scores",
    "bandit_feedback_from_decisions",
    "bernoulli_ts_action_dist",
    "convert_to_action_dist",
    "effective_sample_size",
    "epsilon_greedy_action_dist",
    "estimate_confidence_interval_by_bootstrap",
    "softmax_action_dist",
]
