"""Calibration of predicted vs realised uplift on matured outcomes, from the logged probabilities.

For each matured decision i and each scored candidate a other than the neutral action n, the model predicted the
uplift μ_ia (its logged score: net of the action's cost, vs n). The realised uplift is estimated without bias by
inverse propensity weighting of what was actually served,

    r_ia = y_i · [A_i = a] / π_i(a) − y_i · [A_i = n] / π_i(n)

and the check compares, per decision, the averages over its candidates, μ_i = mean_a μ_ia and r_i = mean_a r_ia:
a z-test on the mean of d_i = r_i − μ_i over the last `window` matured decisions. It alarms when the two-sided
p-value is below the family's level and the gap |mean d| is at least `gap_min`. Every candidate counts, not only
the greedy one: the greedy action's predicted uplift is biased upward by its selection (the winner's curse), so a
calibrated model would look miscalibrated on it. Decisions served by a fallback (probability 1, no randomisation)
are left out, as are candidates with probability 0.

The z-test's normal approximation needs each arm to have been served often enough: the inverse-propensity terms are
heavy-tailed (y / π with π ~ ε/K), and with a few dozen servings of an arm the standard error is underestimated and
the test fires on noise. So the check only tests when every candidate action, the neutral one included, was served
at least `min_support` times in the window (`support`); below that it reports its numbers and stays silent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class CalibrationResult:
    """Mean predicted and realised uplift of the greedy action over `n` matured decisions, and the test."""

    n: int
    predicted: float
    realised: float
    se: float
    support: int = 0  # fewest times any candidate action (the neutral one included) was served in the window

    @property
    def gap(self) -> float:
        """Realised minus predicted mean uplift per decision."""
        return self.realised - self.predicted

    @property
    def p_value(self) -> float:
        """Two-sided p-value of gap = 0."""
        if self.n < 2 or not self.se > 0.0:
            return 1.0
        return float(2.0 * stats.norm.sf(abs(self.gap) / self.se))

    def alarm(self, alpha: float, gap_min: float, min_support: int = 0) -> bool:
        """Enough support, significant at `alpha` and at least `gap_min` apart."""
        return self.support >= min_support and self.p_value < alpha and abs(self.gap) >= gap_min


def calibration(predicted: np.ndarray, realised: np.ndarray, support: int = 0) -> CalibrationResult:
    """The check over matured decisions: per decision, the mean predicted (μ_i) and realised (r_i) uplift over its
    candidates (see the module docstring); NaN entries are left out."""
    predicted, realised = np.asarray(predicted, np.float64), np.asarray(realised, np.float64)
    usable = np.isfinite(predicted) & np.isfinite(realised)
    d = (realised - predicted)[usable]
    n = int(d.size)
    if n < 2:
        return CalibrationResult(n, float("nan"), float("nan"), float("nan"), support)
    return CalibrationResult(n, float(predicted[usable].mean()), float(realised[usable].mean()),
                             float(d.std(ddof=1) / math.sqrt(n)), support)


def realised_uplift(value: float, served: str, candidates: list[str], probabilities: list[float], neutral: str,
                    actions: list[str]) -> float:
    """r_i: the mean over `actions` of the inverse-propensity estimate of each one's uplift over `neutral` (NaN
    when the neutral action or one of `actions` had probability 0)."""
    p = dict(zip(candidates, probabilities))
    p_neutral = p.get(neutral, 0.0)
    if p_neutral <= 0.0 or not actions or any(p.get(a, 0.0) <= 0.0 for a in actions):
        return float("nan")
    control = value * (served == neutral) / p_neutral
    return float(np.mean([value * (served == a) / p[a] - control for a in actions]))
