"""Off-policy estimators with Open Bandit Pipeline's names, fields, methods and array conventions (obp.ope).

Notation (arrays as in `training.ope.inputs`): round i has context x_i, logged action a_i at 0-based slot k_i,
reward r_i and logging propensity p_i = π_b(a_i | x_i, k_i); the evaluation policy gives π_e(a | x_i, k_i) =
action_dist[i, a, k_i]; a reward model gives q̂(x_i, a, k_i). Then

    w_i  = π_e(a_i | x_i, k_i) / p_i                       importance weight
    dm_i = Σ_a π_e(a | x_i, k_i) · q̂(x_i, a, k_i)          the reward model's value of the target policy at round i

and every estimator is V̂ = (1/n) Σ t_i over its round-reward terms t_i (`_estimate_round_rewards`, as in OBP):

    InverseProbabilityWeighting (ipw)            t_i = min(w_i, λ) · r_i                      (λ = ∞: no clipping)
    SelfNormalizedInverseProbabilityWeighting    t_i = w_i · r_i / w̄                          (w̄ = (1/n) Σ w_j)
      (snipw)                                    so V̂ = Σ w_i r_i / Σ w_i
    DirectMethod (dm)                            t_i = dm_i
    DoublyRobust (dr)                            t_i = dm_i + min(w_i, λ) · (r_i − q̂(x_i, a_i, k_i))
    SelfNormalizedDoublyRobust (sndr)            t_i = dm_i + w_i · (r_i − q̂(x_i, a_i, k_i)) / w̄
    SwitchDoublyRobust (switch-dr)               t_i = dm_i + 1[w_i ≤ λ] · w_i · (r_i − q̂(x_i, a_i, k_i))
    DoublyRobustWithShrinkage (dr-os)            t_i = dm_i + ŵ_i · (r_i − q̂(x_i, a_i, k_i)),  ŵ = λw/(w² + λ)

IPW and DR are unbiased when the logged propensities are exact and π_b(a | x, k) > 0 wherever π_e(a | x, k) > 0; DR
stays unbiased for any reward model that did not see round i (cross-fitting, `training.ope.regression`). DM is
biased by the reward model's error; SNIPW and SNDR are consistent with an O(1/n) bias; clipping, switching and
shrinkage trade bias for variance. Deterministic target policies are the special case of a one-hot action_dist.

Beyond OBP, every estimator gives (`estimate_with_diagnostics`, `estimate_analytic_interval`):

- a normal-approximation interval V̂ ± z_{1−α/2}·se with se = √(Σ ψ_i² / (n − 1)) / √n, where ψ_i are the centred
  influence terms: ψ_i = t_i − V̂ for the mean-type estimators (ipw, dm, dr, switch-dr, dr-os), and by the delta
  method for the self-normalised ones:
      snipw: ψ_i = w_i (r_i − V̂) / w̄
      sndr:  ψ_i = (dm_i − mean(dm)) + w_i (r_i − q̂_i − B̂) / w̄,   B̂ = Σ w_j (r_j − q̂_j) / Σ w_j
  (for dm the se reflects only the sampling of contexts: it ignores the reward model's own error);
- when every term t_i is exactly 0 (e.g. no reward among the rounds the target policy matches), the zero-width
  normal interval is replaced by a Wilson-style bound (`training.ope.intervals.zero_terms_bound`) and the result's
  `note` says so;
- the effective sample size ESS = (Σ w_i)² / Σ w_i² and the largest weight max_i w_i of the *unclipped* weights
  (how many on-policy rounds the log is worth, and how much one round can move IPW); NaN when `action` and
  `pscore` are not given (possible for dm).

Departures from OBP: inputs are validated more strictly (`training.ope.inputs`); SNIPW and SNDR refuse a finite
`lambda_` (OBP silently ignores it) and raise a ValueError when Σ w_i = 0 (OBP returns NaN); DR-OS maps w_i = 0 to
ŵ_i = 0 (OBP's formula gives 0/0 = NaN at λ = 0).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from numbers import Real

import numpy as np
from numpy.typing import ArrayLike

from training.ope.inputs import OpeInputs, check_ope_inputs
from training.ope.intervals import (
    check_alpha,
    estimate_confidence_interval_by_bootstrap,
    interval_keys,
    normal_interval,
    standard_error,
    zero_terms_bound,
)


@dataclass(frozen=True)
class OffPolicyEstimate:
    """One estimator's value with its analytic (and optionally bootstrap) interval and weight diagnostics."""

    estimator_name: str
    value: float
    se: float
    lower: float  # analytic interval (see interval_method)
    upper: float
    alpha: float
    interval_method: str  # "normal" (sd of the terms), "delta" (self-normalised), "zero_terms" (Wilson-style bound)
    ess: float  # (Σw)²/Σw² of the unclipped importance weights; NaN without action and pscore
    max_weight: float  # max_i w_i; NaN without action and pscore
    n_rounds: int
    bootstrap_lower: float = math.nan  # OBP's percentile bootstrap, NaN when not computed
    bootstrap_upper: float = math.nan
    note: str = ""  # why the interval is not the plain normal one, when it is not

    def contains(self, truth: float) -> bool:
        """Whether the analytic interval covers `truth`."""
        return self.lower <= truth <= self.upper


def effective_sample_size(weights: np.ndarray) -> float:
    """ESS = (Σ w)² / Σ w² (0 when every weight is 0)."""
    squares = float(np.sum(np.square(weights)))
    return float(np.sum(weights)) ** 2 / squares if squares > 0 else 0.0


def _check_lambda(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(value) or value < 0:
        raise ValueError(f"`lambda_` of {name} must be a number >= 0 (np.inf for none); got {value!r}")


def _check_flag(value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"`use_estimated_pscore` must be a bool; got {type(value).__name__}")


@dataclass
class BaseOffPolicyEstimator(ABC):
    """Base class: round-reward terms → value, OBP's bootstrap interval, analytic interval and diagnostics."""

    interval_method = "normal"  # class attribute, not a field: "delta" for the self-normalised estimators

    @abstractmethod
    def _estimate_round_rewards(self, **kwargs: object) -> np.ndarray:
        """Round-wise terms t_i whose mean is the estimate (OBP's method, no input checks)."""

    @abstractmethod
    def _round_terms(self, inputs: OpeInputs) -> np.ndarray:
        """`_estimate_round_rewards` on checked inputs."""

    def _influence(self, inputs: OpeInputs, terms: np.ndarray) -> np.ndarray:
        """Centred influence terms ψ_i whose mean square gives the se; t_i − V̂ for mean-type estimators."""
        return terms - terms.mean()

    def _value(self, inputs: OpeInputs) -> float:
        return float(self._round_terms(inputs).mean())

    def _bootstrap(
        self, inputs: OpeInputs, alpha: float, n_bootstrap_samples: int, random_state: int | None
    ) -> dict[str, float]:
        return estimate_confidence_interval_by_bootstrap(
            self._round_terms(inputs), alpha=alpha, n_bootstrap_samples=n_bootstrap_samples, random_state=random_state
        )

    def _analytic(self, inputs: OpeInputs, alpha: float) -> OffPolicyEstimate:
        alpha = check_alpha(alpha)
        terms = self._round_terms(inputs)
        value = float(terms.mean())
        weights = _raw_weights(inputs)
        ess = effective_sample_size(weights) if weights is not None else math.nan
        max_weight = float(weights.max()) if weights is not None else math.nan
        method, note = self.interval_method, ""
        if inputs.n_rounds < 2:
            raise ValueError("an interval needs at least two rounds")
        if np.all(terms == 0):
            n_eff = ess if weights is not None else float(inputs.n_rounds)
            low_r, high_r = _reward_range(inputs)
            se = 0.0
            lower, upper = zero_terms_bound(n_eff, low_r, high_r, alpha)
            method = "zero_terms"
            note = (
                f"every round-reward term is 0, so the sample se is 0; the interval is a Wilson-style bound for 0 "
                f"events in n_eff = {n_eff:.1f} rounds, scaled to the logged reward range [{low_r:g}, {high_r:g}]"
            )
            if low_r == high_r == 0:
                note += " — every logged reward is 0, so there is no scale and the bound is [0, 0]: uninformative"
        else:
            se = standard_error(self._influence(inputs, terms))
            lower, upper = normal_interval(value, se, alpha)
            if se == 0:
                note = "every round-reward term is equal: zero sample variance, the interval has width 0"
        return OffPolicyEstimate(
            self.estimator_name, value, se, lower, upper, alpha, method, ess, max_weight, inputs.n_rounds, note=note
        )

    def _analytic_dict(self, inputs: OpeInputs, alpha: float) -> dict[str, float]:
        estimate = self._analytic(inputs, alpha)
        lower, upper = interval_keys(alpha)
        return {"mean": estimate.value, lower: estimate.lower, upper: estimate.upper}

    def _diagnosed(
        self, inputs: OpeInputs, alpha: float, n_bootstrap_samples: int | None, random_state: int | None
    ) -> OffPolicyEstimate:
        estimate = self._analytic(inputs, alpha)
        if not n_bootstrap_samples:
            return estimate
        boot = self._bootstrap(inputs, alpha, n_bootstrap_samples, random_state)
        lower, upper = interval_keys(alpha)
        return replace(estimate, bootstrap_lower=boot[lower], bootstrap_upper=boot[upper])


def _raw_weights(inputs: OpeInputs) -> np.ndarray | None:
    """Unclipped w_i, or None when action or pscore is missing (DM without logged propensities)."""
    if inputs.action is None or inputs.pscore is None:
        return None
    return inputs.importance_weights()


def _reward_range(inputs: OpeInputs) -> tuple[float, float]:
    if inputs.reward is None:
        return 0.0, 0.0
    return float(inputs.reward.min()), float(inputs.reward.max())


def _at_position(array: np.ndarray, position: np.ndarray | None) -> np.ndarray:
    """array[i, :, position_i] (n, K); position None means slot 0."""
    n = array.shape[0]
    pos = np.zeros(n, dtype=int) if position is None else position
    return array[np.arange(n), :, pos]


def _direct_terms(action_dist: np.ndarray, q_hat: np.ndarray, position: np.ndarray | None) -> np.ndarray:
    """dm_i = Σ_a π_e(a | x_i, k_i) q̂(x_i, a, k_i), computed as OBP does (np.average over actions)."""
    return np.average(_at_position(q_hat, position), weights=_at_position(action_dist, position), axis=1)


def _factual(array: np.ndarray, action: np.ndarray, position: np.ndarray | None) -> np.ndarray:
    n = action.shape[0]
    pos = np.zeros(n, dtype=int) if position is None else position
    return array[np.arange(n), action, pos]


@dataclass
class InverseProbabilityWeighting(BaseOffPolicyEstimator):
    """IPW: V̂ = (1/n) Σ min(w_i, λ)·r_i (module docstring); λ = `lambda_` clips large weights (∞: none)."""

    lambda_: float = np.inf
    use_estimated_pscore: bool = False
    estimator_name: str = "ipw"

    def __post_init__(self) -> None:
        """Validate the hyperparameters."""
        _check_lambda(self.lambda_, type(self).__name__)
        _check_flag(self.use_estimated_pscore)

    def _estimate_round_rewards(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        pscore: np.ndarray,
        action_dist: np.ndarray,
        position: np.ndarray | None = None,
        **kwargs: object,
    ) -> np.ndarray:
        """t_i = min(w_i, λ)·r_i."""
        iw = _factual(action_dist, action, position) / pscore
        return reward * np.minimum(iw, self.lambda_)

    def _round_terms(self, inputs: OpeInputs) -> np.ndarray:
        return self._estimate_round_rewards(
            reward=inputs.reward, action=inputs.action, pscore=inputs.pscore,
            action_dist=inputs.action_dist, position=inputs.position,
        )

    def _checked(
        self, reward: ArrayLike, action: ArrayLike, action_dist: ArrayLike, pscore: ArrayLike | None,
        position: ArrayLike | None, estimated_pscore: ArrayLike | None,
    ) -> OpeInputs:
        chosen = estimated_pscore if self.use_estimated_pscore else pscore
        if chosen is None:
            which = "estimated_pscore" if self.use_estimated_pscore else "pscore"
            raise ValueError(f"{self.estimator_name} needs `{which}`, the logging probability of each logged action")
        return check_ope_inputs(action_dist, position, action=action, reward=reward, pscore=chosen)

    def estimate_policy_value(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        action_dist: np.ndarray,
        pscore: np.ndarray | None = None,
        position: np.ndarray | None = None,
        estimated_pscore: np.ndarray | None = None,
        **kwargs: object,
    ) -> float:
        """Estimated policy value of the evaluation policy."""
        return self._value(self._checked(reward, action, action_dist, pscore, position, estimated_pscore))

    def estimate_interval(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        action_dist: np.ndarray,
        pscore: np.ndarray | None = None,
        position: np.ndarray | None = None,
        estimated_pscore: np.ndarray | None = None,
        alpha: float = 0.05,
        n_bootstrap_samples: int = 10000,
        random_state: int | None = None,
        **kwargs: object,
    ) -> dict[str, float]:
        """OBP's bootstrap interval: {"mean", "95.0% CI (lower)", "95.0% CI (upper)"} for α = 0.05."""
        inputs = self._checked(reward, action, action_dist, pscore, position, estimated_pscore)
        return self._bootstrap(inputs, alpha, n_bootstrap_samples, random_state)

    def estimate_analytic_interval(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        action_dist: np.ndarray,
        pscore: np.ndarray | None = None,
        position: np.ndarray | None = None,
        estimated_pscore: np.ndarray | None = None,
        alpha: float = 0.05,
        **kwargs: object,
    ) -> dict[str, float]:
        """Normal (or delta-method) interval with OBP's keys; "mean" is the point estimate."""
        inputs = self._checked(reward, action, action_dist, pscore, position, estimated_pscore)
        return self._analytic_dict(inputs, alpha)

    def estimate_with_diagnostics(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        action_dist: np.ndarray,
        pscore: np.ndarray | None = None,
        position: np.ndarray | None = None,
        estimated_pscore: np.ndarray | None = None,
        alpha: float = 0.05,
        n_bootstrap_samples: int | None = None,
        random_state: int | None = None,
        **kwargs: object,
    ) -> OffPolicyEstimate:
        """Value, se, analytic interval, ESS, max weight (and OBP's bootstrap bounds if n_bootstrap_samples)."""
        inputs = self._checked(reward, action, action_dist, pscore, position, estimated_pscore)
        return self._diagnosed(inputs, alpha, n_bootstrap_samples, random_state)


@dataclass
class SelfNormalizedInverseProbabilityWeighting(InverseProbabilityWeighting):
    """SNIPW: V̂ = Σ w_i r_i / Σ w_i; delta-method se; defined for stochastic and deterministic target policies."""

    estimator_name: str = "snipw"
    interval_method = "delta"

    def __post_init__(self) -> None:
        """Validate the hyperparameters: SNIPW does not clip."""
        super().__post_init__()
        if self.lambda_ != np.inf:
            raise ValueError("SNIPW does not clip weights; use InverseProbabilityWeighting(lambda_=...) to clip")

    def _estimate_round_rewards(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        pscore: np.ndarray,
        action_dist: np.ndarray,
        position: np.ndarray | None = None,
        **kwargs: object,
    ) -> np.ndarray:
        """t_i = w_i r_i / w̄."""
        iw = _factual(action_dist, action, position) / pscore
        return reward * iw / _mean_weight(iw, self.estimator_name)

    def _influence(self, inputs: OpeInputs, terms: np.ndarray) -> np.ndarray:
        iw = inputs.importance_weights()
        return iw * (inputs.reward - terms.mean()) / iw.mean()


def _mean_weight(iw: np.ndarray, name: str) -> float:
    mean = float(iw.mean())
    if mean == 0:
        raise ValueError(
            f"{name} is undefined (0/0): the evaluation policy gives probability 0 to every logged action at its "
            f"slot; the log holds no information about this policy — check action_dist, or use dm"
        )
    return mean


@dataclass
class DirectMethod(BaseOffPolicyEstimator):
    """DM: V̂ = (1/n) Σ_i Σ_a π_e(a | x_i, k_i) q̂(x_i, a, k_i)."""

    estimator_name: str = "dm"

    def _estimate_round_rewards(
        self,
        action_dist: np.ndarray,
        estimated_rewards_by_reg_model: np.ndarray,
        position: np.ndarray | None = None,
        **kwargs: object,
    ) -> np.ndarray:
        """t_i = dm_i."""
        return _direct_terms(action_dist, estimated_rewards_by_reg_model, position)

    def _round_terms(self, inputs: OpeInputs) -> np.ndarray:
        return self._estimate_round_rewards(
            action_dist=inputs.action_dist, estimated_rewards_by_reg_model=inputs.estimated_rewards_by_reg_model,
            position=inputs.position,
        )

    def _checked(
        self, action_dist: ArrayLike, estimated_rewards_by_reg_model: ArrayLike | None, position: ArrayLike | None,
        **logged: ArrayLike | None,
    ) -> OpeInputs:
        if estimated_rewards_by_reg_model is None:
            raise ValueError("dm needs `estimated_rewards_by_reg_model` (n_rounds, n_actions, len_list)")
        return check_ope_inputs(
            action_dist, position, estimated_rewards_by_reg_model=estimated_rewards_by_reg_model, **logged
        )

    def estimate_policy_value(
        self,
        action_dist: np.ndarray,
        estimated_rewards_by_reg_model: np.ndarray,
        position: np.ndarray | None = None,
        **kwargs: object,
    ) -> float:
        """Estimated policy value of the evaluation policy."""
        return self._value(self._checked(action_dist, estimated_rewards_by_reg_model, position))

    def estimate_interval(
        self,
        action_dist: np.ndarray,
        estimated_rewards_by_reg_model: np.ndarray,
        position: np.ndarray | None = None,
        alpha: float = 0.05,
        n_bootstrap_samples: int = 10000,
        random_state: int | None = None,
        **kwargs: object,
    ) -> dict[str, float]:
        """OBP's bootstrap interval of the DM terms (the reward model held fixed)."""
        inputs = self._checked(action_dist, estimated_rewards_by_reg_model, position)
        return self._bootstrap(inputs, alpha, n_bootstrap_samples, random_state)

    def estimate_analytic_interval(
        self,
        action_dist: np.ndarray,
        estimated_rewards_by_reg_model: np.ndarray,
        position: np.ndarray | None = None,
        alpha: float = 0.05,
        reward: np.ndarray | None = None,
        **kwargs: object,
    ) -> dict[str, float]:
        """Normal interval of the DM terms with OBP's keys (the reward model held fixed)."""
        inputs = self._checked(action_dist, estimated_rewards_by_reg_model, position, reward=reward)
        return self._analytic_dict(inputs, alpha)

    def estimate_with_diagnostics(
        self,
        action_dist: np.ndarray,
        estimated_rewards_by_reg_model: np.ndarray,
        position: np.ndarray | None = None,
        action: np.ndarray | None = None,
        pscore: np.ndarray | None = None,
        reward: np.ndarray | None = None,
        alpha: float = 0.05,
        n_bootstrap_samples: int | None = None,
        random_state: int | None = None,
        **kwargs: object,
    ) -> OffPolicyEstimate:
        """Value, se, interval; ESS and max weight when `action` and `pscore` are given (else NaN)."""
        logged = {"action": action, "pscore": pscore} if action is not None and pscore is not None else {}
        inputs = self._checked(action_dist, estimated_rewards_by_reg_model, position, reward=reward, **logged)
        return self._diagnosed(inputs, alpha, n_bootstrap_samples, random_state)


@dataclass
class DoublyRobust(BaseOffPolicyEstimator):
    """DR: V̂ = (1/n) Σ [dm_i + min(w_i, λ)(r_i − q̂(x_i, a_i, k_i))]; λ = `lambda_` clips (∞: none)."""

    lambda_: float = np.inf
    use_estimated_pscore: bool = False
    estimator_name: str = "dr"

    def __post_init__(self) -> None:
        """Validate the hyperparameters."""
        _check_lambda(self.lambda_, type(self).__name__)
        _check_flag(self.use_estimated_pscore)

    def _modified_weights(self, iw: np.ndarray) -> np.ndarray:
        """The weight applied to the residual: clipped min(w, λ) for DR."""
        return np.minimum(iw, self.lambda_)

    def _estimate_round_rewards(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        pscore: np.ndarray,
        action_dist: np.ndarray,
        estimated_rewards_by_reg_model: np.ndarray,
        position: np.ndarray | None = None,
        **kwargs: object,
    ) -> np.ndarray:
        """t_i = dm_i + ŵ_i (r_i − q̂(x_i, a_i, k_i)), ŵ the estimator's modified weight."""
        iw = _factual(action_dist, action, position) / pscore
        q_factual = _factual(estimated_rewards_by_reg_model, action, position)
        dm = _direct_terms(action_dist, estimated_rewards_by_reg_model, position)
        return dm + self._modified_weights(iw) * (reward - q_factual)

    def _round_terms(self, inputs: OpeInputs) -> np.ndarray:
        return self._estimate_round_rewards(
            reward=inputs.reward, action=inputs.action, pscore=inputs.pscore, action_dist=inputs.action_dist,
            estimated_rewards_by_reg_model=inputs.estimated_rewards_by_reg_model, position=inputs.position,
        )

    def _checked(
        self, reward: ArrayLike, action: ArrayLike, action_dist: ArrayLike,
        estimated_rewards_by_reg_model: ArrayLike | None, pscore: ArrayLike | None, position: ArrayLike | None,
        estimated_pscore: ArrayLike | None,
    ) -> OpeInputs:
        chosen = estimated_pscore if self.use_estimated_pscore else pscore
        if chosen is None:
            which = "estimated_pscore" if self.use_estimated_pscore else "pscore"
            raise ValueError(f"{self.estimator_name} needs `{which}`, the logging probability of each logged action")
        if estimated_rewards_by_reg_model is None:
            raise ValueError(f"{self.estimator_name} needs `estimated_rewards_by_reg_model` (see RegressionModel)")
        return check_ope_inputs(
            action_dist, position, action=action, reward=reward, pscore=chosen,
            estimated_rewards_by_reg_model=estimated_rewards_by_reg_model,
        )

    def estimate_policy_value(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        action_dist: np.ndarray,
        estimated_rewards_by_reg_model: np.ndarray,
        pscore: np.ndarray | None = None,
        position: np.ndarray | None = None,
        estimated_pscore: np.ndarray | None = None,
        **kwargs: object,
    ) -> float:
        """Estimated policy value of the evaluation policy."""
        inputs = self._checked(
            reward, action, action_dist, estimated_rewards_by_reg_model, pscore, position, estimated_pscore
        )
        return self._value(inputs)

    def estimate_interval(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        action_dist: np.ndarray,
        estimated_rewards_by_reg_model: np.ndarray,
        pscore: np.ndarray | None = None,
        position: np.ndarray | None = None,
        estimated_pscore: np.ndarray | None = None,
        alpha: float = 0.05,
        n_bootstrap_samples: int = 10000,
        random_state: int | None = None,
        **kwargs: object,
    ) -> dict[str, float]:
        """OBP's bootstrap interval: {"mean", "95.0% CI (lower)", "95.0% CI (upper)"} for α = 0.05."""
        inputs = self._checked(
            reward, action, action_dist, estimated_rewards_by_reg_model, pscore, position, estimated_pscore
        )
        return self._bootstrap(inputs, alpha, n_bootstrap_samples, random_state)

    def estimate_analytic_interval(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        action_dist: np.ndarray,
        estimated_rewards_by_reg_model: np.ndarray,
        pscore: np.ndarray | None = None,
        position: np.ndarray | None = None,
        estimated_pscore: np.ndarray | None = None,
        alpha: float = 0.05,
        **kwargs: object,
    ) -> dict[str, float]:
        """Normal (or delta-method) interval with OBP's keys; "mean" is the point estimate."""
        inputs = self._checked(
            reward, action, action_dist, estimated_rewards_by_reg_model, pscore, position, estimated_pscore
        )
        return self._analytic_dict(inputs, alpha)

    def estimate_with_diagnostics(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        action_dist: np.ndarray,
        estimated_rewards_by_reg_model: np.ndarray,
        pscore: np.ndarray | None = None,
        position: np.ndarray | None = None,
        estimated_pscore: np.ndarray | None = None,
        alpha: float = 0.05,
        n_bootstrap_samples: int | None = None,
        random_state: int | None = None,
        **kwargs: object,
    ) -> OffPolicyEstimate:
        """Value, se, analytic interval, ESS, max weight (and OBP's bootstrap bounds if n_bootstrap_samples)."""
        inputs = self._checked(
            reward, action, action_dist, estimated_rewards_by_reg_model, pscore, position, estimated_pscore
        )
        return self._diagnosed(inputs, alpha, n_bootstrap_samples, random_state)


@dataclass
class SelfNormalizedDoublyRobust(DoublyRobust):
    """SNDR: V̂ = (1/n) Σ dm_i + Σ w_i (r_i − q̂_i) / Σ w_i; delta-method se."""

    estimator_name: str = "sndr"
    interval_method = "delta"

    def __post_init__(self) -> None:
        """Validate the hyperparameters: SNDR does not clip."""
        super().__post_init__()
        if self.lambda_ != np.inf:
            raise ValueError("SNDR does not clip weights; use DoublyRobust(lambda_=...) to clip")

    def _modified_weights(self, iw: np.ndarray) -> np.ndarray:
        """w_i / w̄."""
        return iw / _mean_weight(iw, self.estimator_name)

    def _influence(self, inputs: OpeInputs, terms: np.ndarray) -> np.ndarray:
        iw = inputs.importance_weights()
        q_hat = inputs.estimated_rewards_by_reg_model
        dm = _direct_terms(inputs.action_dist, q_hat, inputs.position)
        residual = inputs.reward - _factual(q_hat, inputs.action, inputs.position)
        bias = float(np.sum(iw * residual) / np.sum(iw))
        return (dm - dm.mean()) + iw * (residual - bias) / iw.mean()


@dataclass
class SwitchDoublyRobust(DoublyRobust):
    """Switch-DR: the DR correction only where w_i ≤ λ, the reward model alone elsewhere (λ = ∞ is DR)."""

    lambda_: float = np.inf
    estimator_name: str = "switch-dr"

    def _modified_weights(self, iw: np.ndarray) -> np.ndarray:
        """1[w_i ≤ λ]·w_i."""
        return iw * (iw <= self.lambda_)


@dataclass
class DoublyRobustWithShrinkage(DoublyRobust):
    """DR-OS: the DR correction with shrunk weights ŵ = λw/(w² + λ) (λ = 0 is DM, λ = ∞ is DR; OBP's default 0)."""

    lambda_: float = 0.0
    estimator_name: str = "dr-os"

    def _modified_weights(self, iw: np.ndarray) -> np.ndarray:
        """λw/(w² + λ), 0 where w = 0, w itself at λ = ∞."""
        if self.lambda_ == np.inf:
            return iw
        denominator = iw**2 + self.lambda_
        return np.divide(self.lambda_ * iw, denominator, out=np.zeros_like(iw), where=denominator > 0)


ESTIMATORS: tuple[type[BaseOffPolicyEstimator], ...] = (
    InverseProbabilityWeighting,
    SelfNormalizedInverseProbabilityWeighting,
    DirectMethod,
    DoublyRobust,
    SelfNormalizedDoublyRobust,
    SwitchDoublyRobust,
    DoublyRobustWithShrinkage,
)
