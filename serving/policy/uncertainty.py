"""Optimism under uncertainty: add a bonus to each score in proportion to how unsure the model is of it.

    u = μ + γ·s

μ is the expected incremental net value of an action, s ≥ 0 its uncertainty (a standard error or posterior
standard deviation, in the same units) and γ ≥ 0 how many of those to add (UCB-style). γ = 0 returns μ. The
bonus is deterministic given its inputs, so the probabilities computed from u by `exploration` stay exact.
"""

from __future__ import annotations

import math

import numpy as np

from serving.policy.exploration import flagged_positions


def with_bonus(mu: np.ndarray, s: np.ndarray, gamma: float) -> np.ndarray:
    """Optimistic score u = μ + γ·s (UCB-style); γ = 0 returns μ unchanged."""
    means = np.asarray(mu, dtype=float)
    spreads = np.asarray(s, dtype=float)
    if means.shape != spreads.shape:
        raise ValueError(
            f"mu and s must have the same shape, one entry per action; got {means.shape} and {spreads.shape}"
        )
    if not 0.0 <= gamma < math.inf:
        raise ValueError(f"gamma must be finite and >= 0 (0 turns the bonus off); got {gamma}")
    nan_means = np.isnan(means)
    if nan_means.any():
        raise ValueError(f"mu is NaN at positions {flagged_positions(nan_means)}; fix the model output")
    bad_spreads = ~(spreads >= 0.0) | ~np.isfinite(spreads)  # `~(s >= 0)` also catches NaN
    if bad_spreads.any():
        raise ValueError(
            f"s must be finite and >= 0 (an uncertainty); not so at positions {flagged_positions(bad_spreads)}"
        )
    if gamma == 0.0:
        return means.copy()
    return means + gamma * spreads
