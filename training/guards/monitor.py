"""The sequential alarm: a sliding serving window tested every `step` decisions against the training window.

At each look every monitored column (each logged feature and the score) gets Pearson's homogeneity test on the
reference's fixed bins (training/guards/drift.py). A column alarms when its p-value is below the Bonferroni level
`false_alarm_rate / (columns × looks per horizon)` *and* the shift is large enough to matter (PSI ≥ psi_min or
JS ≥ js_min). Calibration on matured outcomes (training/guards/calibration.py) is one more column of the same family.
The union bound holds however the overlapping windows and the columns depend on each other, so over `horizon`
stationary decisions the chance of any alarm is at most `false_alarm_rate` (up to the χ² approximation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from training.guards.calibration import CalibrationResult
from training.guards.config import GuardConfig
from training.guards.drift import Comparison, Reference, compare

SCORE = "__score__"  # the score column's name in a Reference (the best candidate's score per decision)


@dataclass(frozen=True)
class Look:
    """One look: where it ended (decisions seen), each column's comparison, and which columns alarmed."""

    seen: int
    comparisons: tuple[Comparison, ...]
    alarms: tuple[str, ...]
    alpha: float
    calibration: CalibrationResult | None = None

    @property
    def alarmed(self) -> bool:
        """True when any column alarmed."""
        return bool(self.alarms)

    def table(self) -> list[dict]:
        """The comparisons as rows (for Dagster metadata and the bench)."""
        return [{"column": c.name, "n": c.n, "psi": round(c.psi, 4), "js": round(c.js, 4), "chi2": round(c.chi2, 2),
                 "dof": c.dof, "p_value": c.p_value, "alarm": c.name in self.alarms} for c in self.comparisons]


@dataclass
class DriftMonitor:
    """Keeps the last `config.window` decisions' columns and tests them every `config.step` decisions."""

    reference: Reference
    config: GuardConfig
    calibrated: bool = True  # calibration counts as one more test of the family
    seen: int = field(default=0, init=False)  # decisions observed
    _buffer: dict[str, np.ndarray] = field(default_factory=dict, init=False)
    _next_look: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._buffer = {name: np.empty(0) for name in self.reference.columns}
        self._next_look = self.config.step

    @property
    def tests_per_look(self) -> int:
        """Columns tested at each look (calibration included)."""
        return len(self.reference.columns) + int(self.calibrated)

    @property
    def alpha(self) -> float:
        """The level of each test."""
        return self.config.alpha_each(self.tests_per_look)

    def observe(
        self, columns: dict[str, np.ndarray], calibration: Callable[[], CalibrationResult | None] | None = None
    ) -> list[Look]:
        """Add decisions (one array per reference column, equal lengths; a column absent is all missing) and
        return the looks they completed (usually none or one); `calibration` gives each look's calibration."""
        n = len(next(iter(columns.values()))) if columns else 0
        looks: list[Look] = []
        start = 0
        while start < n:
            take = min(n - start, self._next_look - self.seen)
            self._append({k: v[start:start + take] for k, v in columns.items()}, take)
            start += take
            if self.seen == self._next_look:
                self._next_look += self.config.step
                if len(next(iter(self._buffer.values()), ())) >= self.config.min_window:
                    looks.append(self.look(calibration() if calibration is not None else None))
        return looks

    def _append(self, columns: dict[str, np.ndarray], n: int) -> None:
        keep = self.config.window
        for name, held in self._buffer.items():
            new = np.asarray(columns.get(name, np.full(n, np.nan)), np.float64)
            self._buffer[name] = np.concatenate([held, new])[-keep:]
        self.seen += n

    def look(self, calibration: CalibrationResult | None = None) -> Look:
        """Test the current window now (and `calibration`, when given)."""
        alpha = self.alpha
        comparisons = tuple(compare(bins, self._buffer[name]) for name, bins in self.reference.columns.items())
        alarms = [c.name for c in comparisons
                  if c.p_value < alpha and (c.psi >= self.config.psi_min or c.js >= self.config.js_min)]
        calibrated = self.config.calibration
        if calibration is not None and calibration.alarm(alpha, calibrated.gap_min, calibrated.min_support):
            alarms.append("calibration")
        return Look(self.seen, comparisons, tuple(alarms), alpha, calibration)
