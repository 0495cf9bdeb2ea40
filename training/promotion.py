"""The promotion gate: a challenger replaces the champion only if it ranks better on the same holdout and is
calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateResult:
    """Whether the challenger may be promoted, with the figures the decision used."""

    passed: bool
    challenger_qini: float
    champion_qini: float | None
    margin: float
    calibration_passed: bool
    reasons: tuple[str, ...]


def promotion_gate(
    challenger_qini: float, champion_qini: float | None, margin: float, calibration_failures: list[str]
) -> GateResult:
    """Pass when the challenger's uplift calibration has no failures (see `training.calibration.passes`) and its
    holdout Qini ≥ champion's + margin on the same rows (no champion: the Qini condition holds)."""
    reasons = []
    if champion_qini is not None and challenger_qini < champion_qini + margin:
        reasons.append(
            f"challenger holdout Qini {challenger_qini:.4f} < champion {champion_qini:.4f} + margin {margin:.4f}"
        )
    reasons += [f"uplift calibration: {failure}" for failure in calibration_failures]
    return GateResult(not reasons, challenger_qini, champion_qini, margin, not calibration_failures, tuple(reasons))
