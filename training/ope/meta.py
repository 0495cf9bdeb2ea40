"""OffPolicyEvaluation: several estimators run on one logged data set, as OBP's obp.ope.OffPolicyEvaluation.

`bandit_feedback` is OBP's dict: "action", "reward" (required), "position" (0-based slots; None or absent when
len_list = 1), "pscore", "context" and anything else (ignored). Every estimator gets the same inputs: `action_dist`
of the evaluation policy and, for DM and the DR family, `estimated_rewards_by_reg_model` — one array for all, or a
dict {estimator_name: array} as in OBP. Each estimator takes the inputs it needs and ignores the rest.

Methods with OBP's names and keys: estimate_policy_values, estimate_intervals (bootstrap, OBP's default
n_bootstrap_samples = 100 here), summarize_off_policy_estimates, evaluate_performance_of_estimators (metric "se" =
(V̂ − V)², "relative-ee" = |V̂ − V| / |V|), summarize_estimators_comparison. Beyond OBP: estimate_with_diagnostics
(analytic interval, ESS, max weight per estimator) and summarize_with_diagnostics (the same as a DataFrame).
OBP's plotting methods are not provided.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from training.ope.estimators import (
    BaseOffPolicyEstimator,
    DirectMethod,
    DoublyRobust,
    OffPolicyEstimate,
)

RegModelInput = np.ndarray | Mapping[str, np.ndarray] | None
METRICS = ("se", "relative-ee")


@dataclass
class OffPolicyEvaluation:
    """Runs each of `ope_estimators` on `bandit_feedback` for a given evaluation policy's action_dist."""

    bandit_feedback: Mapping[str, object]
    ope_estimators: Sequence[BaseOffPolicyEstimator]

    def __post_init__(self) -> None:
        """Check the feedback keys and index the estimators by estimator_name."""
        for key in ("action", "reward"):
            if key not in self.bandit_feedback:
                raise ValueError(f"bandit_feedback lacks {key!r}; it needs at least 'action' and 'reward'")
        self.ope_estimators_: dict[str, BaseOffPolicyEstimator] = {}
        for estimator in self.ope_estimators:
            name = estimator.estimator_name
            if name in self.ope_estimators_:
                raise ValueError(f"two estimators are named {name!r}; give one a different estimator_name")
            self.ope_estimators_[name] = estimator
        self.is_model_dependent = any(isinstance(e, DirectMethod | DoublyRobust) for e in self.ope_estimators)

    def _inputs(
        self, action_dist: np.ndarray, estimated_rewards_by_reg_model: RegModelInput,
        estimated_pscore: RegModelInput = None,
    ) -> dict[str, dict[str, object]]:
        """Keyword arguments per estimator name."""
        if self.is_model_dependent and estimated_rewards_by_reg_model is None:
            raise ValueError(
                "DM and DR-type estimators need `estimated_rewards_by_reg_model`; fit a RegressionModel first"
            )
        feedback = self.bandit_feedback
        common = {key: feedback.get(key) for key in ("action", "position", "reward", "pscore", "context")}
        inputs = {}
        for name in self.ope_estimators_:
            inputs[name] = {
                **common, "action_dist": action_dist,
                "estimated_rewards_by_reg_model": _for(estimated_rewards_by_reg_model, name),
                "estimated_pscore": _for(estimated_pscore, name),
            }
        return inputs

    def estimate_policy_values(
        self, action_dist: np.ndarray, estimated_rewards_by_reg_model: RegModelInput = None,
        estimated_pscore: RegModelInput = None,
    ) -> dict[str, float]:
        """{estimator_name: estimated policy value}."""
        inputs = self._inputs(action_dist, estimated_rewards_by_reg_model, estimated_pscore)
        return {name: e.estimate_policy_value(**inputs[name]) for name, e in self.ope_estimators_.items()}

    def estimate_intervals(
        self,
        action_dist: np.ndarray,
        estimated_rewards_by_reg_model: RegModelInput = None,
        estimated_pscore: RegModelInput = None,
        alpha: float = 0.05,
        n_bootstrap_samples: int = 100,
        random_state: int | None = None,
    ) -> dict[str, dict[str, float]]:
        """{estimator_name: OBP's bootstrap dict ("mean", "95.0% CI (lower)", "95.0% CI (upper)")}."""
        inputs = self._inputs(action_dist, estimated_rewards_by_reg_model, estimated_pscore)
        return {
            name: e.estimate_interval(
                **inputs[name], alpha=alpha, n_bootstrap_samples=n_bootstrap_samples, random_state=random_state
            )
            for name, e in self.ope_estimators_.items()
        }

    def summarize_off_policy_estimates(
        self,
        action_dist: np.ndarray,
        estimated_rewards_by_reg_model: RegModelInput = None,
        estimated_pscore: RegModelInput = None,
        alpha: float = 0.05,
        n_bootstrap_samples: int = 100,
        random_state: int | None = None,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(values with relative_estimated_policy_value = V̂ / mean logged reward, bootstrap intervals), as OBP."""
        values = pd.DataFrame(
            self.estimate_policy_values(action_dist, estimated_rewards_by_reg_model, estimated_pscore),
            index=["estimated_policy_value"],
        ).T
        intervals = pd.DataFrame(
            self.estimate_intervals(
                action_dist, estimated_rewards_by_reg_model, estimated_pscore, alpha, n_bootstrap_samples, random_state
            )
        ).T
        behaviour = float(np.mean(self.bandit_feedback["reward"]))
        # OBP sets the ratio to NaN (with a warning) when the logged mean reward is not positive.
        relative = values["estimated_policy_value"] / behaviour if behaviour > 0 else np.nan
        values["relative_estimated_policy_value"] = relative
        return values, intervals

    def evaluate_performance_of_estimators(
        self,
        ground_truth_policy_value: float,
        action_dist: np.ndarray,
        estimated_rewards_by_reg_model: RegModelInput = None,
        estimated_pscore: RegModelInput = None,
        metric: str = "se",
    ) -> dict[str, float]:
        """{estimator_name: squared error ("se") or relative estimation error ("relative-ee") against the truth}."""
        if metric not in METRICS:
            raise ValueError(f"`metric` must be one of {METRICS}; got {metric!r}")
        truth = float(ground_truth_policy_value)
        if not math.isfinite(truth):
            raise ValueError(f"ground_truth_policy_value must be finite; got {ground_truth_policy_value!r}")
        if metric == "relative-ee" and truth == 0:
            raise ValueError("relative-ee divides by the ground truth, which is 0; use metric='se'")
        values = self.estimate_policy_values(action_dist, estimated_rewards_by_reg_model, estimated_pscore)
        if metric == "se":
            return {name: (value - truth) ** 2 for name, value in values.items()}
        return {name: abs((value - truth) / truth) for name, value in values.items()}

    def summarize_estimators_comparison(
        self,
        ground_truth_policy_value: float,
        action_dist: np.ndarray,
        estimated_rewards_by_reg_model: RegModelInput = None,
        estimated_pscore: RegModelInput = None,
        metric: str = "se",
    ) -> pd.DataFrame:
        """`evaluate_performance_of_estimators` as a one-column DataFrame indexed by estimator name."""
        errors = self.evaluate_performance_of_estimators(
            ground_truth_policy_value, action_dist, estimated_rewards_by_reg_model, estimated_pscore, metric
        )
        return pd.DataFrame(errors, index=[metric]).T

    def estimate_with_diagnostics(
        self,
        action_dist: np.ndarray,
        estimated_rewards_by_reg_model: RegModelInput = None,
        estimated_pscore: RegModelInput = None,
        alpha: float = 0.05,
        n_bootstrap_samples: int | None = None,
        random_state: int | None = None,
    ) -> dict[str, OffPolicyEstimate]:
        """{estimator_name: value, se, analytic interval, ESS, max weight (and bootstrap bounds if asked)}."""
        inputs = self._inputs(action_dist, estimated_rewards_by_reg_model, estimated_pscore)
        return {
            name: e.estimate_with_diagnostics(
                **inputs[name], alpha=alpha, n_bootstrap_samples=n_bootstrap_samples, random_state=random_state
            )
            for name, e in self.ope_estimators_.items()
        }

    def summarize_with_diagnostics(
        self,
        action_dist: np.ndarray,
        estimated_rewards_by_reg_model: RegModelInput = None,
        estimated_pscore: RegModelInput = None,
        alpha: float = 0.05,
        n_bootstrap_samples: int | None = None,
        random_state: int | None = None,
    ) -> pd.DataFrame:
        """`estimate_with_diagnostics` as a DataFrame, one row per estimator."""
        estimates = self.estimate_with_diagnostics(
            action_dist, estimated_rewards_by_reg_model, estimated_pscore, alpha, n_bootstrap_samples, random_state
        )
        return pd.DataFrame([asdict(e) for e in estimates.values()]).set_index("estimator_name")


def _for(value: RegModelInput, name: str) -> np.ndarray | None:
    """OBP's per-estimator input: the estimator's entry of a dict (None if absent), or the one array for all."""
    if isinstance(value, Mapping):
        return value.get(name)
    return value
