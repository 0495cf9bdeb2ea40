"""The guards' configuration (serving/conf/guards.yaml), validated once: thresholds, cautious policy, rollback."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_GUARDS_FILE = Path(__file__).resolve().parents[2] / "serving" / "conf" / "guards.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CalibrationConfig(_Strict):
    """Predicted vs realised uplift on matured outcomes."""

    window: int = Field(default=2000, gt=0)
    min_outcomes: int = Field(default=500, gt=1)
    gap_min: float = Field(default=0.05, ge=0.0)
    min_support: int = Field(default=100, ge=0)


class RollbackConfig(_Strict):
    """When the guard may move the champion alias back (issue 15; the promotion rules are issue 6's)."""

    recent_s: float = Field(default=7 * 86400.0, gt=0.0)
    min_outcomes: int = Field(default=300, gt=1)
    z: float = Field(default=1.96, gt=0.0)


class CautiousConfig(_Strict):
    """The policy a surface switches to on an alarm (serving/ops/cautious.py applies it)."""

    neutral_share: float = Field(default=0.3, ge=0.0, le=1.0)
    epsilon: float = Field(default=0.01, ge=0.0, le=1.0)
    temperature_factor: float = Field(default=0.5, gt=0.0, le=1.0)
    uncertainty_bonus: float = Field(default=0.0, ge=0.0)


class GuardConfig(_Strict):
    """Alarm thresholds and the sequential test's layout (docs/guards.md)."""

    window: int = Field(default=500, gt=0)
    step: int = Field(default=250, gt=0)
    min_window: int = Field(default=250, gt=0)
    horizon: int = Field(default=10_000, gt=0)
    false_alarm_rate: float = Field(default=0.05, gt=0.0, lt=1.0)
    bins: int = Field(default=10, ge=2)
    psi_min: float = Field(default=0.10, ge=0.0)
    js_min: float = Field(default=0.10, ge=0.0)
    calibration: CalibrationConfig = CalibrationConfig()
    rollback: RollbackConfig = RollbackConfig()
    cautious: CautiousConfig = CautiousConfig()

    @property
    def looks(self) -> int:
        """Tests per column over the horizon."""
        return max(self.horizon // self.step, 1)

    def alpha_each(self, columns: int) -> float:
        """The level of one test: the false-alarm rate split over `columns` tests per look (features, the score,
        calibration) and the horizon's looks (Bonferroni: the family-wise rate stays ≤ false_alarm_rate whatever
        the dependence between overlapping windows and correlated features)."""
        return self.false_alarm_rate / (max(columns, 1) * self.looks)


def load_guard_config(path: Path = DEFAULT_GUARDS_FILE) -> GuardConfig:
    """Read and validate the guards' file; a bad file raises ValueError naming it."""
    try:
        return GuardConfig.model_validate(yaml.safe_load(Path(path).read_text()) or {})
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise ValueError(f"{path}: not a valid guards file ({exc}); see docs/guards.md") from exc
