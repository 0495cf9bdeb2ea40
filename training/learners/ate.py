"""Average treatment effects with AIPW (doubly robust) pseudo-outcomes.

The AIPW pseudo-outcome of treatment a for a row (x, T, y) logged with propensity p (the logged probability of
the logged action T) is

    ψ_a = μ_a(x) − μ_0(x) + 1[T = a]·(y − μ_a(x))/p − 1[T = control]·(y − μ_0(x))/p

where μ_arm(x) is an outcome model. Its mean is unbiased for the ATE of a when either the μ's or the propensities
are right (here the propensities are logged, hence exact); the DR-learner regresses it on x.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import norm

from training.learners.base import ArrayLike, MultiArmUpliftLearner


def aipw_pseudo_outcomes(
    outcomes: np.ndarray,
    treatment: np.ndarray,
    y: np.ndarray,
    propensity: np.ndarray,
    arms: Sequence[str],
    max_weight: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """AIPW pseudo-outcomes ψ_a for every row and every treatment.

    `outcomes` is μ_arm(x), shape (n, 1 + K) in `arms` order (control first); `propensity` the logged probability
    of each row's logged action. The inverse propensity 1/p is capped at `max_weight` (None: uncapped).
    Returns (ψ of shape (n, K) in `arms[1:]` order, boolean mask of the rows whose 1/p was capped).
    """
    treatment = np.asarray(treatment).astype(str)
    y = np.asarray(y, dtype=float)
    propensity = np.asarray(propensity, dtype=float)
    outcomes = np.asarray(outcomes, dtype=float)
    if outcomes.shape != (len(y), len(arms)):
        raise ValueError(f"outcomes must have shape (n, {len(arms)}) = (rows, arms); got {outcomes.shape}")
    inverse = 1.0 / propensity
    clipped = np.zeros(len(y), dtype=bool)
    if max_weight is not None:
        clipped = inverse > max_weight
        inverse = np.minimum(inverse, max_weight)
    control_residual = np.where(treatment == arms[0], (y - outcomes[:, 0]) * inverse, 0.0)
    psi = np.empty((len(y), len(arms) - 1))
    for j, arm in enumerate(arms[1:], start=1):
        treated_residual = np.where(treatment == arm, (y - outcomes[:, j]) * inverse, 0.0)
        psi[:, j - 1] = outcomes[:, j] - outcomes[:, 0] + treated_residual - control_residual
    return psi, clipped


def estimate_ate(
    learner: MultiArmUpliftLearner,
    X: pd.DataFrame | np.ndarray,
    treatment: Sequence[str] | np.ndarray,
    y: ArrayLike,
    propensity: ArrayLike,
    alpha: float = 0.05,
    max_weight: float | None = None,
    ipw_fallback: bool = False,
) -> pd.DataFrame:
    """AIPW estimate of each treatment's ATE over the rows given, with a normal-approximation interval.

    The outcome models are the fitted learner's own: `learner.predict_outcomes(X)` (S: f(x, arm); T: μ_arm;
    X: its stage-1 μ_arm; DR: the mean of its cross-fitted μ_arm). The interval is mean(ψ_a) ± z_{1−α/2}·sd(ψ_a)/√n
    (sd with ddof = 1; rows are treated as independent, so several exposures of one user make it a little narrow).
    `max_weight` caps 1/p as in the DR-learner; None (default) keeps the estimate unbiased. `ipw_fallback`: for a
    learner without per-arm outcome models, estimate with μ = 0 (plain IPW) instead of refusing.
    Pass rows the learner was not fitted on (e.g. a holdout): on its own training rows the μ's have seen the
    outcomes and the residual term shrinks. Returns columns action, ate, lower, upper, n (one row per treatment,
    in `learner.treatments_` order).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha}")
    if propensity is None:
        raise ValueError("estimate_ate needs the logged propensity of each row's logged action")
    if hasattr(learner, "predict_outcomes"):
        outcomes = learner.predict_outcomes(X)  # checks the learner is fitted and the feature count
    elif ipw_fallback:
        # No per-arm outcome models (R-learner, a selection): μ = 0 turns AIPW into plain IPW, still unbiased with
        # the logged propensities, only wider.
        learner.predict_uplift(X)  # checks the learner is fitted and the feature count
        outcomes = np.zeros((len(X), len(learner.arms_)))
    else:
        raise TypeError(f"{type(learner).__name__} has no predict_outcomes(X); AIPW needs per-arm outcome models")
    treatment = np.asarray(treatment).astype(str)
    y = np.asarray(y, dtype=float)
    propensity = np.asarray(propensity, dtype=float)
    if not (len(outcomes) == len(treatment) == len(y) == len(propensity)):
        raise ValueError(
            f"X, treatment, y and propensity must have equal length; got "
            f"{[len(outcomes), len(treatment), len(y), len(propensity)]}"
        )
    if len(y) < 2:
        raise ValueError("estimate_ate needs at least two rows")
    if np.any(propensity <= 0) or np.any(propensity > 1) or not np.all(np.isfinite(propensity)):
        raise ValueError("propensity must be the logged probability of the logged action, in (0, 1]")
    unknown = sorted(str(a) for a in set(treatment) - set(learner.arms_))
    if unknown:
        raise ValueError(f"actions {unknown} are not arms of the fitted learner {learner.arms_}")
    psi, _ = aipw_pseudo_outcomes(outcomes, treatment, y, propensity, learner.arms_, max_weight)
    n = len(y)
    mean = psi.mean(axis=0)
    half = norm.ppf(1 - alpha / 2) * psi.std(axis=0, ddof=1) / np.sqrt(n)
    return pd.DataFrame(
        {"action": list(learner.treatments_), "ate": mean, "lower": mean - half, "upper": mean + half, "n": n}
    )
