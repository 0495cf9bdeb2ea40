"""Confidence intervals of a policy value: OBP's percentile bootstrap, the normal approximation, a zero-event bound.

- `estimate_confidence_interval_by_bootstrap` is OBP's (obp.utils, same arguments and dict keys): B resamples with
  replacement of the n round-reward terms t_i, each resample's mean, then the α/2 and 1 − α/2 percentiles of those
  means. The resamples are drawn exactly as OBP draws them (`check_random_state(random_state).choice(t, size=n)`,
  B times in a row), so with the same `random_state` the numbers are OBP's; the draws are batched for speed.
  As in OBP the terms of a self-normalised estimator are resampled with their normaliser fixed at the full-sample
  mean weight.
- `normal_interval`: V̂ ± z_{1−α/2}·se.
- `zero_terms_bound`: when every term is exactly 0 the sample standard error is 0, and a zero-width interval would
  claim certainty that the data cannot give (e.g. no click among the rounds the target policy matches). The bound
  used instead is the Wilson score interval for 0 successes in n_eff trials, [0, z²/(n_eff + z²)], scaled to the
  reward range seen in the log, [min(r_min, 0), max(r_max, 0)]: with rewards in {0, 1} and n_eff = n it is the
  textbook Wilson interval (≈ 3.84/n at α = 0.05, the two-sided cousin of the "rule of three" 3/n). n_eff is the
  effective sample size of the importance weights when they are known (how many on-policy rounds the log is worth),
  else n; with n_eff = 0 (the target policy matches no logged round) it is the whole reward range. It is a
  heuristic: it assumes the rewards lie in the observed range; when every logged reward is 0 there is no scale and
  the bound is [0, 0], which the result's note says.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm
from sklearn.utils import check_random_state

_BOOTSTRAP_CELLS = 4_000_000  # resampled values held in memory at once (32 MB of float64)


def interval_keys(alpha: float) -> tuple[str, str]:
    """OBP's dict keys of the lower and upper bound, e.g. "95.0% CI (lower)" for α = 0.05 (same float formatting)."""
    level = 100 * (1.0 - alpha)
    return f"{level}% CI (lower)", f"{level}% CI (upper)"


def check_alpha(alpha: float) -> float:
    """α as a float in (0, 1), else a ValueError."""
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha (significance level) must be a float in (0, 1), e.g. 0.05 for 95 %; got {alpha!r}")
    return float(alpha)


def estimate_confidence_interval_by_bootstrap(
    samples: np.ndarray,
    alpha: float = 0.05,
    n_bootstrap_samples: int = 10000,
    random_state: int | np.random.RandomState | None = None,
) -> dict[str, float]:
    """OBP's percentile bootstrap of the mean of `samples`: {"mean", "<level>% CI (lower)", "<level>% CI (upper)"}."""
    alpha = check_alpha(alpha)
    if isinstance(n_bootstrap_samples, bool) or not isinstance(n_bootstrap_samples, int) or n_bootstrap_samples < 1:
        raise ValueError(f"n_bootstrap_samples must be a positive int; got {n_bootstrap_samples!r}")
    values = np.asarray(samples, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"samples must be a non-empty 1-D array of round-reward terms; got shape {values.shape}")
    random_ = check_random_state(random_state)
    n = values.size
    means = np.empty(n_bootstrap_samples)
    per_batch = max(1, _BOOTSTRAP_CELLS // n)
    for start in range(0, n_bootstrap_samples, per_batch):
        stop = min(start + per_batch, n_bootstrap_samples)
        # One randint call for a batch of resamples consumes the generator exactly as OBP's successive
        # `choice(samples, size=n)` calls do (each is randint(0, n, size=n)), so the resamples are identical.
        means[start:stop] = values[random_.randint(0, n, size=(stop - start, n))].mean(axis=1)
    lower, upper = interval_keys(alpha)
    return {
        "mean": float(np.mean(means)),
        lower: float(np.percentile(means, 100 * (alpha / 2))),
        upper: float(np.percentile(means, 100 * (1.0 - alpha / 2))),
    }


def normal_interval(value: float, se: float, alpha: float = 0.05) -> tuple[float, float]:
    """Two-sided normal-approximation interval value ± z_{1−α/2}·se."""
    half = float(norm.ppf(1.0 - check_alpha(alpha) / 2.0)) * se
    return value - half, value + half


def zero_terms_bound(
    n_effective: float, reward_min: float, reward_max: float, alpha: float = 0.05
) -> tuple[float, float]:
    """Wilson-style interval for an estimate whose terms are all 0: [min(r_min, 0), max(r_max, 0)]·z²/(n_eff + z²)."""
    if not n_effective >= 0:
        raise ValueError(f"n_effective must be >= 0 (the rounds the estimate rests on); got {n_effective!r}")
    z2 = float(norm.ppf(1.0 - check_alpha(alpha) / 2.0)) ** 2
    share = z2 / (n_effective + z2)
    return min(reward_min, 0.0) * share, max(reward_max, 0.0) * share


def standard_error(influence: np.ndarray) -> float:
    """√(Σ ψ_i² / (n − 1)) / √n for centred influence terms ψ (the sd with ddof = 1 of the terms, over √n)."""
    n = influence.size
    if n < 2:
        raise ValueError("a standard error needs at least two rounds")
    return float(np.sqrt(np.sum(influence**2) / (n - 1) / n))
