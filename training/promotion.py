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
    challenger_qini: float, champion_qini: float | None, margin: float, calibration_failures: list[str],
    same_dataset_as_champion: bool = False,
) -> GateResult:
    """Pass when the challenger's uplift calibration has no failures (see `training.calibration.passes`), its
    holdout Qini is above the champion's + margin on the same rows (no champion: the Qini condition holds; a tie is
    not a win), and it was not trained on the champion's very dataset (a retrain on unchanged data is no news: only
    its noise could make it look better)."""
    reasons = []
    if champion_qini is not None and challenger_qini <= champion_qini + margin:
        relation = "=" if challenger_qini == champion_qini + margin else "<"
        reasons.append(
            f"challenger holdout Qini {challenger_qini:.4f} {relation} champion {champion_qini:.4f} + margin "
            f"{margin:.4f}: not above"
        )
    if same_dataset_as_champion:
        reasons.append("trained on the champion's dataset (same dataset hash): a retrain on unchanged data")
    reasons += [f"uplift calibration: {failure}" for failure in calibration_failures]
    return GateResult(not reasons, challenger_qini, champion_qini, margin, not calibration_failures, tuple(reasons))
