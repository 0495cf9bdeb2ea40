"""The promotion gate on the live decision log: would the challenger's serving policy have earned more than the
champion's on recent decisions it was not trained on?

Both policies are evaluated off-policy on the same window of logged decisions (`training.logged_training.LoggedRows`,
the window held out of the challenger's training), each as it would serve there: its scores of the round's logged
candidates (the ones eligibility, consent, caps and budgets left; `candidate_scores`, serving's own formula:
uplift − unit cost, 0 for the neutral action, plus the surface's bonus γ·s; s the model's per-user uncertainty,
`candidate_spreads`), turned into probabilities by the surface's exploration (`serving.policy.exploration`, through
`training.ope.action_dist_from_scores`; thompson reads s too, with serving's common normals). The reward of
round i is its net value r_i = revenue_i − unit cost of the served action.

Estimators (`training.ope`): DR with a cross-fitted reward model q̂(x, a) (XGBoost on the logged features and the
action, 3 folds) and SNIPW. The comparison is paired, on the same rounds: for each estimator the per-round
influence terms of challenger and champion are differenced,

    DR:    d_i = t_i^c − t_i^b,   t_i = Σ_a π(a|x_i) q̂(x_i, a) + w_i (r_i − q̂(x_i, a_i)),   w_i = π(a_i|x_i)/p_i
    SNIPW: d_i = w_i^c (r_i − V^c)/w̄^c − w_i^b (r_i − V^b)/w̄^b            (delta method)

    Δ̂ = V̂^c − V̂^b,   se(Δ̂) = sd(d)/√n,   lower = Δ̂ − z_{1−α} · se   (one-sided)

Promotion needs, for DR and for SNIPW, lower > margin: the challenger beats the champion on the same rounds by more
than the margin with confidence 1 − α (a tie, or a retrain that changes nothing, fails: Δ̂ ≈ 0 < margin + z·se).
It is refused, each with its reason, when the challenger's effective sample size (Σw)²/Σw² on the window is below
`min_ess` (too few rounds where the two policies agree to tell), when the challenger was trained on the champion's
dataset (same `dataset_hash`), when a rollback removed it from the champion alias (a person must promote it), and
when its uplift calibration fails. With no champion, the challenger is judged against the logged policy itself
(its value is the window's mean reward).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm
from xgboost import XGBRegressor

from serving.policy.exploration import Exploration
from training.logged_training import LoggedRows
from training.ope import (
    DoublyRobust,
    OffPolicyEstimate,
    RegressionModel,
    SelfNormalizedInverseProbabilityWeighting,
    action_dist_from_scores,
)
from training.pyfunc import UpliftModel

GATE_ESTIMATORS = ("dr", "snipw")


@dataclass(frozen=True)
class LiveGateConfig:
    """The gate's thresholds: margin in net value per decision, least effective sample size, one-sided level."""

    margin: float = 0.0
    min_ess: float = 300.0
    alpha: float = 0.05
    reward_model_folds: int = 3
    random_state: int = 0


@dataclass(frozen=True)
class PairedDifference:
    """Challenger − champion on the same rounds: the difference, its standard error and one-sided lower bound."""

    estimator: str
    difference: float
    se: float
    lower: float


@dataclass(frozen=True)
class LiveEvaluation:
    """Both policies' estimates on the window, and their paired differences."""

    n_rounds: int
    challenger: dict[str, OffPolicyEstimate]
    champion: dict[str, OffPolicyEstimate]
    differences: dict[str, PairedDifference]
    logged_value: float  # the window's mean net reward (what the logging policies earned)


@dataclass(frozen=True)
class LiveGateResult:
    """The verdict with its reasons, and the figures it rests on (for the check's metadata)."""

    passed: bool
    reasons: tuple[str, ...]
    evaluation: LiveEvaluation | None
    figures: dict[str, float | str] = field(default_factory=dict)


def candidate_spreads(model: UpliftModel, rows: LoggedRows) -> list[list[float]]:
    """Each logged round's candidate uncertainties s as serving reads them (`Champion.net_uplift`): the model's
    per-user σ of the action's uplift (`UpliftModel.uplift_sd`), 0 for the neutral action and unscored actions."""
    sd = model.uplift_sd(rows.X.to_numpy(np.float32))
    position = {a: j for j, a in enumerate(model.treatments)}
    return [
        [0.0 if a == model.control or a not in position else float(sd[i, position[a]]) for a in candidates]
        for i, candidates in enumerate(rows.candidates)
    ]


def candidate_scores(
    model: UpliftModel, rows: LoggedRows, uncertainty_bonus: float = 0.0
) -> list[list[float]]:
    """Each logged round's candidate scores as serving computes them (`Champion.net_uplift` + `with_bonus`):
    float64(uplift) − unit cost (0 for the neutral action; −cost for an action the model does not score) + γ·s,
    s from `candidate_spreads` (serving's per-user uncertainty)."""
    uplift = model.uplift(rows.X.to_numpy(np.float32))
    position = {a: j for j, a in enumerate(model.treatments)}
    spreads = candidate_spreads(model, rows) if uncertainty_bonus else None
    out = []
    for i, candidates in enumerate(rows.candidates):
        scores = []
        for k, action in enumerate(candidates):
            if action == model.control:
                score = 0.0
            else:
                j = position.get(action)
                score = (0.0 if j is None else float(uplift[i, j])) - model.action_costs.get(action, 0.0)
            scores.append(score + uncertainty_bonus * spreads[i][k] if spreads is not None else score)
        out.append(scores)
    return out


def policy_action_dist(
    model: UpliftModel, rows: LoggedRows, exploration: Exploration, action_ids: Sequence[str],
    uncertainty_bonus: float = 0.0,
) -> np.ndarray:
    """The action_dist of `model`'s serving policy on the logged rounds: its scores and (for thompson) its
    uncertainties, through the service's exploration."""
    spreads = candidate_spreads(model, rows) if exploration.method == "thompson" else None
    return action_dist_from_scores(
        rows.candidates, candidate_scores(model, rows, uncertainty_bonus), action_ids, exploration, spreads
    )


def net_reward(rows: LoggedRows, action_costs: Mapping[str, float]) -> np.ndarray:
    """r_i = revenue_i − unit cost of the served action."""
    return rows.revenue - np.array([float(action_costs.get(a, 0.0)) for a in rows.action])


def evaluate_on_log(
    rows: LoggedRows,
    challenger: UpliftModel,
    champion: UpliftModel | None,
    exploration: Exploration,
    action_ids: Sequence[str],
    uncertainty_bonus: float = 0.0,
    config: LiveGateConfig = LiveGateConfig(),
) -> LiveEvaluation:
    """DR and SNIPW of the challenger's and the champion's serving policies on the logged rounds, and their paired
    differences (with no champion: the logged policy, whose distribution is the logged one)."""
    if len(rows) < 2:
        raise ValueError(f"the window holds {len(rows)} usable decisions; the gate needs at least 2")
    action_ids = list(action_ids)
    index = {a: k for k, a in enumerate(action_ids)}
    unknown = sorted({a for cands in rows.candidates for a in cands} - set(index))
    if unknown:
        raise ValueError(f"logged candidates {unknown} are not in action_ids {action_ids}")
    action = np.array([index[a] for a in rows.action])
    reward = net_reward(rows, challenger.action_costs)
    context = rows.X.to_numpy(np.float32)
    q_hat = RegressionModel(
        base_model=XGBRegressor(n_estimators=200, max_depth=4, learning_rate=0.05, n_jobs=1,
                                random_state=config.random_state),
        n_actions=len(action_ids),
    ).fit_predict(context, action, reward, n_folds=config.reward_model_folds, random_state=config.random_state)
    dists = {"challenger": policy_action_dist(challenger, rows, exploration, action_ids, uncertainty_bonus)}
    if champion is not None:
        dists["champion"] = policy_action_dist(champion, rows, exploration, action_ids, uncertainty_bonus)
    else:  # judged against what the logging policies did: their logged distributions
        dists["champion"] = _logged_dist(rows, index)
    estimates: dict[str, dict[str, OffPolicyEstimate]] = {}
    terms: dict[str, dict[str, np.ndarray]] = {}
    for name, dist in dists.items():
        dr, snipw = DoublyRobust(), SelfNormalizedInverseProbabilityWeighting()
        estimates[name] = {
            "dr": dr.estimate_with_diagnostics(reward, action, dist, q_hat, pscore=rows.propensity, alpha=config.alpha),
            "snipw": snipw.estimate_with_diagnostics(reward, action, dist, pscore=rows.propensity, alpha=config.alpha),
        }
        weight = dist[np.arange(len(rows)), action, 0] / rows.propensity
        terms[name] = {
            "dr": dr._estimate_round_rewards(reward=reward, action=action, pscore=rows.propensity, action_dist=dist,
                                             estimated_rewards_by_reg_model=q_hat),
            "snipw": _snipw_influence(weight, reward),
        }
    z = float(norm.ppf(1 - config.alpha))
    differences = {}
    for estimator in GATE_ESTIMATORS:
        d = terms["challenger"][estimator] - terms["champion"][estimator]
        diff = estimates["challenger"][estimator].value - estimates["champion"][estimator].value
        se = float(np.std(d, ddof=1) / math.sqrt(len(d)))
        differences[estimator] = PairedDifference(estimator, diff, se, diff - z * se)
    return LiveEvaluation(len(rows), estimates["challenger"], estimates["champion"], differences, float(reward.mean()))


def live_gate(
    evaluation: LiveEvaluation | None,
    config: LiveGateConfig = LiveGateConfig(),
    calibration_failures: Sequence[str] = (),
    same_dataset_as_champion: bool = False,
    rolled_back: bool = False,
    window_rounds: int = 0,
) -> LiveGateResult:
    """Apply the rules of the module docstring; every failed rule is a reason."""
    reasons = []
    if rolled_back:
        reasons.append("this version was rolled back; promote it by hand (python -m training.cli promote N)")
    if same_dataset_as_champion:
        reasons.append("trained on the champion's dataset (same dataset_hash): nothing new to learn from")
    figures: dict[str, float | str] = {}
    if evaluation is None:
        reasons.append(f"no decision-log window to judge on ({window_rounds} usable decisions)")
    else:
        ess = evaluation.challenger["dr"].ess
        figures.update(n_rounds=evaluation.n_rounds, challenger_ess=ess, logged_value=evaluation.logged_value)
        if ess < config.min_ess:
            reasons.append(f"effective sample size {ess:.0f} < {config.min_ess:.0f}: too few logged decisions agree "
                           "with the challenger to judge it")
        for name in GATE_ESTIMATORS:
            c, b, d = evaluation.challenger[name], evaluation.champion[name], evaluation.differences[name]
            figures.update({
                f"challenger_{name}": c.value, f"challenger_{name}_lower": c.lower, f"challenger_{name}_upper": c.upper,
                f"champion_{name}": b.value, f"difference_{name}": d.difference, f"difference_{name}_se": d.se,
                f"difference_{name}_lower": d.lower,
            })
            if not d.lower > config.margin:
                reasons.append(
                    f"{name}: challenger {c.value:.4f} vs champion {b.value:.4f} per decision, difference "
                    f"{d.difference:+.4f} (one-sided {1 - config.alpha:.0%} lower bound {d.lower:+.4f}) is not above "
                    f"the margin {config.margin:.4f}"
                )
    reasons += [f"uplift calibration: {failure}" for failure in calibration_failures]
    return LiveGateResult(not reasons, tuple(reasons), evaluation, figures)


def _snipw_influence(weight: np.ndarray, reward: np.ndarray) -> np.ndarray:
    """Delta-method terms of SNIPW, w_i (r_i − V)/w̄ (0 everywhere when no round has weight)."""
    mean_weight = float(weight.mean())
    if mean_weight == 0:
        return np.zeros_like(reward)
    value = float((weight * reward).sum() / weight.sum())
    return weight * (reward - value) / mean_weight


def _logged_dist(rows: LoggedRows, index: Mapping[str, int]) -> np.ndarray:
    dist = np.zeros((len(rows), len(index), 1))
    for i, (candidates, probabilities) in enumerate(zip(rows.candidates, rows.probabilities)):
        for action, p in zip(candidates, probabilities):
            dist[i, index[action], 0] = p
    return dist
