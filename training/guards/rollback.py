"""The guard's rollback rule (issue 15; promotion rules are issue 6's): on an alarm, move the champion alias back
when the champion was promoted recently and its realised value per decision on matured outcomes falls below the
previous champion's interval.

    previous interval = mean ± z · sd / √n  of the previous champion's realised net value per decision
    roll back  ⇔  alarm  ∧  now − promoted_at ≤ recent_s  ∧  n_current ≥ min_outcomes  ∧  mean_current < low_previous

Both means are over decisions the champion's policy drew (fallbacks, cautious neutral answers included, are left
out: they are not the model's). A drift that lowers every model's value also triggers it; that is deliberate (a
recent promotion is the first suspect, and returning to the model that was serving before is cheap to undo:
`python -m training.cli promote N`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from training.guards.config import RollbackConfig


@dataclass(frozen=True)
class ValueInterval:
    """Mean realised value per decision with its normal interval."""

    n: int
    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, values: np.ndarray, z: float) -> ValueInterval:
        """The interval of `values` (NaN bounds under two values)."""
        values = np.asarray(values, np.float64)
        n = int(values.size)
        if n < 2:
            return cls(n, float(values.mean()) if n else float("nan"), float("nan"), float("nan"))
        mean, half = float(values.mean()), z * float(values.std(ddof=1)) / math.sqrt(n)
        return cls(n, mean, mean - half, mean + half)


@dataclass(frozen=True)
class RollbackVerdict:
    """Whether to roll back, and why (written to the audit trail either way it goes)."""

    roll_back: bool
    reason: str
    current: ValueInterval | None = None
    previous: ValueInterval | None = None


def verdict(
    current: np.ndarray, previous: np.ndarray, promoted_at: float | None, now: float, config: RollbackConfig
) -> RollbackVerdict:
    """Apply the rule (the caller has an alarm) to the two champions' realised values."""
    if promoted_at is None:
        return RollbackVerdict(False, "no promotion of the current champion in the audit trail")
    age = now - promoted_at
    if age > config.recent_s:
        return RollbackVerdict(False, f"champion promoted {age:.0f} s ago, more than recent_s={config.recent_s:.0f}")
    now_value, before = ValueInterval.of(current, config.z), ValueInterval.of(previous, config.z)
    if now_value.n < config.min_outcomes or before.n < config.min_outcomes:
        return RollbackVerdict(False, f"too few matured decisions (current {now_value.n}, previous {before.n}; "
                               f"need {config.min_outcomes})", now_value, before)
    if now_value.mean < before.low:
        return RollbackVerdict(True, f"realised value {now_value.mean:.3f}/decision (n={now_value.n}) below the "
                               f"previous champion's interval [{before.low:.3f}, {before.high:.3f}] "
                               f"(n={before.n})", now_value, before)
    return RollbackVerdict(False, f"realised value {now_value.mean:.3f} within or above the previous champion's "
                           f"interval [{before.low:.3f}, {before.high:.3f}]", now_value, before)
