"""Calibration of outcome models and of predicted uplift, with a pass/fail criterion a promotion gate can use.

Outcome calibration (`OutcomeCalibrator`) maps an outcome model's score to a calibrated outcome:

- "platt": ŷ = σ(a·s + b), a and b the (unpenalised, weighted) maximum-likelihood logistic regression of the 0/1
  outcome on the score s. For conversion probabilities only: it raises on a non-binary outcome. Classic Platt
  scaling feeds the model's margin (logit) as s; a probability works too but is a different two-parameter family.
- "isotonic": ŷ = the (weighted) least-squares non-decreasing step function of s (scikit-learn's
  IsotonicRegression, clipped outside the fitted score range). For conversion it calibrates probabilities; for
  revenue (zero-inflated amounts) it is a monotone re-mapping of the score to the conditional mean amount.

Uplift calibration (`uplift_calibration`) compares predicted with observed uplift in bins of predicted uplift:
rows are sorted by prediction and cut into `n_bins` equal-count bins (bin 0 = lowest predictions; bin b holds the
rows of rank r with ⌊r·n_bins/n⌋ = b, so tied predictions may straddle two bins). Per bin, with weights w (1 if
none; meant as inverse logged propensities), treated (T) and control (C) rows:

    predicted = Σ w·τ̂ / Σ w                                  (all rows of the bin)
    observed  = ȳ_T − ȳ_C,   ȳ_g = Σ_g w·y / Σ_g w
    se        = √(v_T + v_C),  v_g = m_g/(m_g − 1) · Σ_g w²·(y − ȳ_g)² / (Σ_g w)²   (m_g rows with w > 0)
    lower, upper = observed ∓ z_{1−α/2}·se,   covered = lower ≤ predicted ≤ upper

With w = 1, v_g is s_g²/n_g, so se is the Welch standard error of a difference in means; with weights it is the
linearised (sandwich) variance of a ratio (Hajek) mean. A bin with fewer than two weighted rows in an arm has
se = NaN and is left out of the summary.

`calibration_summary` (over bins with a finite se > 0, "usable"): mean_abs_error = Σ_b W_b·|observed_b −
predicted_b| / Σ_b W_b with W_b the bin's total weight, max_abs_error, coverage = share of usable bins covered,
and the weighted-least-squares line observed = intercept + slope·predicted with weights 1/se_b² (slope_se =
√[(XᵀWX)⁻¹]₁₁, the se's taken as known). Slope 1 and intercept 0 is perfect calibration; slope < 1 means the
predictions overstate the differences between users (e.g. 0.5 when every prediction is twice the truth).

Criterion (`passes` / `calibration_failures`): at least 2 usable bins, coverage ≥ min_coverage (default 0.8; a
calibrated model covers ≈ 1 − α of the bins), slope within slope_range (default [0.8, 1.25]) and, if given,
mean_abs_error ≤ max_error (in outcome units, so it has no default). The slope is noisy on small holdouts: read
slope_se alongside it, and use fewer bins if it is large.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit
from scipy.stats import norm
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.isotonic import IsotonicRegression

from training.metrics import checked_sample_weight

CALIBRATION_COLUMNS = (
    "bin", "n_treated", "n_control", "weight", "predicted", "observed", "se", "lower", "upper", "covered"
)
"""Columns of the `uplift_calibration` table, in order."""


class OutcomeCalibrator(BaseEstimator):
    """Platt or isotonic calibration of an outcome model's scores (see the module docstring for the definitions).

    After `fit`, Platt exposes `a_` and `b_` (ŷ = σ(a_·s + b_)); isotonic exposes the fitted `isotonic_`.
    """

    def __init__(self, method: str = "platt"):
        self.method = method

    def fit(self, scores: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> OutcomeCalibrator:
        """Fit the map from `scores` to `y` (optionally weighted); returns self."""
        if self.method not in ("platt", "isotonic"):
            raise ValueError(f"method must be 'platt' or 'isotonic'; got {self.method!r}")
        s = _vector(scores, "scores")
        y = _vector(y, "y")
        if len(s) != len(y) or len(s) == 0:
            raise ValueError(f"scores and y must be non-empty and of equal length; got {len(s)}, {len(y)}")
        w = np.ones(len(y)) if sample_weight is None else checked_sample_weight(sample_weight, len(y))
        if self.method == "platt":
            if not np.isin(y, (0.0, 1.0)).all():
                raise ValueError(
                    "Platt scaling needs a binary (0/1) outcome such as conversion; for revenue amounts use "
                    "method='isotonic' (a monotone map of the score to the mean amount)"
                )
            if w[y == 1].sum() == 0 or w[y == 0].sum() == 0:
                raise ValueError("Platt scaling needs both outcomes (0 and 1) with positive weight")
            self.a_, self.b_ = _platt(s, y, w)
        else:
            self.isotonic_ = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(s, y, sample_weight=w)
        return self

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated outcome for each score."""
        s = _vector(scores, "scores")
        if self.method == "platt":
            if not hasattr(self, "a_"):
                raise NotFittedError("OutcomeCalibrator is not fitted; call fit(scores, y) first")
            return expit(self.a_ * s + self.b_)
        if not hasattr(self, "isotonic_"):
            raise NotFittedError("OutcomeCalibrator is not fitted; call fit(scores, y) first")
        return self.isotonic_.predict(s)


def uplift_calibration(
    y: np.ndarray,
    treatment: np.ndarray,
    uplift: np.ndarray,
    n_bins: int = 10,
    sample_weight: np.ndarray | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Predicted vs observed uplift per equal-count bin of predicted uplift (one row per bin, lowest first).

    Columns: bin, n_treated, n_control (row counts), weight (Σ w of the bin), predicted, observed, se, lower,
    upper, covered; definitions in the module docstring. `table.attrs["alpha"]` records alpha.
    """
    y, uplift = _vector(y, "y"), _vector(uplift, "uplift")
    treatment = np.asarray(treatment)
    n = len(y)
    if not (n == len(uplift) == len(treatment)):
        raise ValueError(f"y, treatment and uplift lengths differ: {len(y)}, {len(treatment)}, {len(uplift)}")
    if not np.isin(treatment, (0, 1)).all():
        raise ValueError("treatment must be 0 (control) or 1 (treated)")
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer; got {n_bins}")
    if n < n_bins:
        raise ValueError(f"{n} rows cannot fill {n_bins} bins")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha}")
    treatment = treatment.astype(int)
    w = np.ones(n) if sample_weight is None else checked_sample_weight(sample_weight, n)
    n_bins = int(n_bins)
    bins = np.empty(n, dtype=int)
    bins[np.argsort(uplift, kind="mergesort")] = np.arange(n) * n_bins // n
    z = float(norm.ppf(1 - alpha / 2))
    rows: list[dict[str, Any]] = []
    for b in range(n_bins):
        in_bin = bins == b
        treated, control = in_bin & (treatment == 1), in_bin & (treatment == 0)
        mean_t, var_t = _weighted_mean_and_variance(y[treated], w[treated])
        mean_c, var_c = _weighted_mean_and_variance(y[control], w[control])
        weight = float(w[in_bin].sum())
        predicted = float(np.sum(w[in_bin] * uplift[in_bin]) / weight) if weight > 0 else float("nan")
        observed = mean_t - mean_c
        se = float(np.sqrt(var_t + var_c))
        lower, upper = observed - z * se, observed + z * se
        rows.append({
            "bin": b,
            "n_treated": int(treated.sum()),
            "n_control": int(control.sum()),
            "weight": weight,
            "predicted": predicted,
            "observed": observed,
            "se": se,
            "lower": lower,
            "upper": upper,
            "covered": bool(lower <= predicted <= upper),  # False when anything is NaN
        })
    table = pd.DataFrame(rows, columns=list(CALIBRATION_COLUMNS))
    table.attrs["alpha"] = alpha
    return table


def calibration_summary(table: pd.DataFrame) -> dict[str, float]:
    """Summary of an `uplift_calibration` table over its usable bins (finite se > 0); NaN where undefined.

    Keys: n_bins, n_bins_usable, mean_abs_error (bin-weight-weighted), max_abs_error, mean_predicted,
    mean_observed (bin-weight-weighted), coverage, slope, slope_se, intercept (WLS with weights 1/se²).
    """
    missing = [c for c in CALIBRATION_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"not an uplift_calibration table: columns {missing} are missing")
    se = table["se"].to_numpy(float)
    usable = np.isfinite(se) & (se > 0) & np.isfinite(table["observed"].to_numpy(float))
    t = table.loc[usable]
    pred, obs, weight = t["predicted"].to_numpy(float), t["observed"].to_numpy(float), t["weight"].to_numpy(float)
    nan = float("nan")
    summary: dict[str, float] = {"n_bins": float(len(table)), "n_bins_usable": float(usable.sum())}
    if usable.sum() == 0 or weight.sum() <= 0:
        summary.update(
            mean_abs_error=nan, max_abs_error=nan, mean_predicted=nan, mean_observed=nan, coverage=nan,
            slope=nan, slope_se=nan, intercept=nan,
        )
        return summary
    error = np.abs(obs - pred)
    summary.update(
        mean_abs_error=float(np.sum(weight * error) / weight.sum()),
        max_abs_error=float(error.max()),
        mean_predicted=float(np.sum(weight * pred) / weight.sum()),
        mean_observed=float(np.sum(weight * obs) / weight.sum()),
        coverage=float(t["covered"].to_numpy(bool).mean()),
    )
    summary.update(_wls_line(pred, obs, 1 / se[usable] ** 2))
    return summary


def calibration_failures(
    table: pd.DataFrame,
    max_error: float | None = None,
    min_coverage: float = 0.8,
    slope_range: tuple[float, float] | None = (0.8, 1.25),
    max_slope_z: float | None = None,
) -> list[str]:
    """Reasons the table fails the calibration criterion (module docstring); empty when it passes.

    `max_slope_z` adds a test that is fair on noisy holdouts: |slope − 1| ≤ max_slope_z · slope_se.
    """
    s = calibration_summary(table)
    failures = []
    if s["n_bins_usable"] < 2:
        failures.append(f"only {s['n_bins_usable']:.0f} bins have both arms with a standard error; need 2")
        return failures
    if not s["coverage"] >= min_coverage:
        failures.append(f"coverage {s['coverage']:.2f} < {min_coverage:.2f}")
    if slope_range is not None and not slope_range[0] <= s["slope"] <= slope_range[1]:
        failures.append(
            f"slope {s['slope']:.3f} (se {s['slope_se']:.3f}) outside [{slope_range[0]}, {slope_range[1]}]"
        )
    if max_slope_z is not None and not abs(s["slope"] - 1.0) <= max_slope_z * s["slope_se"]:
        failures.append(
            f"slope {s['slope']:.3f} is {abs(s['slope'] - 1) / s['slope_se']:.1f} standard errors from 1 "
            f"(allowed {max_slope_z})"
        )
    if max_error is not None and not s["mean_abs_error"] <= max_error:
        failures.append(f"mean absolute calibration error {s['mean_abs_error']:.4g} > {max_error:.4g}")
    return failures


def passes(
    table: pd.DataFrame,
    max_error: float | None = None,
    min_coverage: float = 0.8,
    slope_range: tuple[float, float] | None = (0.8, 1.25),
    max_slope_z: float | None = None,
) -> bool:
    """True when the table meets the calibration criterion (see `calibration_failures` for the reasons if not)."""
    return not calibration_failures(table, max_error, min_coverage, slope_range, max_slope_z)


def _platt(s: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted ML logistic fit of y on s, on the standardised score for conditioning, mapped back to (a, b)."""
    total = w.sum()
    centre = float(np.sum(w * s) / total)
    scale = float(np.sqrt(np.sum(w * (s - centre) ** 2) / total))
    if scale == 0:  # a constant score carries no information: a = 0, b = logit of the mean outcome
        rate = float(np.sum(w * y) / total)
        return 0.0, float(np.log(rate / (1 - rate)))
    x = (s - centre) / scale
    design = np.column_stack([x, np.ones_like(x)])

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        margin = design @ theta
        value = np.sum(w * (np.logaddexp(0, margin) - y * margin)) / total
        return value, design.T @ (w * (expit(margin) - y)) / total

    def hessian(theta: np.ndarray) -> np.ndarray:
        p = expit(design @ theta)
        return (design * (w * p * (1 - p))[:, None]).T @ design / total

    fit = minimize(loss, np.zeros(2), jac=True, hess=hessian, method="trust-exact", options={"gtol": 1e-10})
    slope, intercept = fit.x
    return float(slope / scale), float(intercept - slope * centre / scale)


def _weighted_mean_and_variance(y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """(ȳ = Σwy/Σw, m/(m − 1)·Σw²(y − ȳ)²/(Σw)²); (NaN, NaN) without two rows of positive weight."""
    positive = w > 0
    m, total = int(positive.sum()), float(w.sum())
    if m == 0:
        return float("nan"), float("nan")
    mean = float(np.sum(w * y) / total)
    if m < 2:
        return mean, float("nan")
    return mean, float(m / (m - 1) * np.sum(w**2 * (y - mean) ** 2) / total**2)


def _wls_line(x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> dict[str, float]:
    nan = float("nan")
    # Constant predictions (e.g. an action whose recalibrated slope is 0) define no line.
    if len(x) < 2 or np.ptp(x) <= 1e-9 * max(1.0, float(np.abs(x).max())):
        return {"slope": nan, "slope_se": nan, "intercept": nan}
    design = np.column_stack([np.ones_like(x), x])
    precision = (design * weight[:, None]).T @ design
    try:
        covariance = np.linalg.inv(precision)
    except np.linalg.LinAlgError:
        return {"slope": nan, "slope_se": nan, "intercept": nan}
    intercept, slope = covariance @ (design.T @ (weight * y))
    return {"slope": float(slope), "slope_se": float(np.sqrt(covariance[1, 1])), "intercept": float(intercept)}


def _vector(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite")
    return array


class UpliftRecalibrator(BaseEstimator):
    """Per-action linear map τ′_a = intercept_a + slope_a·τ_a, fitted on rows the learner did not see.

    For each action, the WLS line of binned observed uplift on binned predicted uplift (as in
    `calibration_summary`) gives slope and intercept. The slope is clipped to [min_slope, max_slope]: never
    inverted, and by default never amplified (a learner's uplift is usually over-dispersed, slope < 1). The
    intercept is then refitted so the weighted mean prediction matches the weighted mean observed uplift.
    Ranking within an action is unchanged (slope ≥ 0); comparisons across actions and against costs improve.

    `shrink=True` applies each correction only as far as the data can tell it from none: with d the correction and
    se its standard error, d·max(0, 1 − se²/d²) (positive-part shrinkage toward no correction). The slope's
    correction is d = slope − 1 with the WLS slope_se (an undefined line leaves the slope at 1, not 0); the level's
    is d = mean observed − mean predicted, with se = √(Σ_b W_b²·se_b²)/Σ_b W_b over the usable bins. On a large
    log (small se) it is the plain recalibration; on a small one, where each action's observed mean is mostly
    noise, it keeps the learner's own level and spread (docs/benchmarks.md, "The learner on the loop's data").
    """

    def __init__(self, n_bins: int = 5, min_slope: float = 0.0, max_slope: float = 1.0, shrink: bool = False):
        self.n_bins = n_bins
        self.min_slope = min_slope
        self.max_slope = max_slope
        self.shrink = shrink

    def fit(
        self,
        y: np.ndarray,
        actions: np.ndarray,
        uplift: np.ndarray,
        treatments: list[str],
        control: str,
        sample_weight: np.ndarray | None = None,
    ) -> "UpliftRecalibrator":
        """Fit one line per treatment on its rows and the control rows; returns self."""
        actions = np.asarray(actions).astype(str)
        uplift = np.asarray(uplift, dtype=float)
        if uplift.shape != (len(actions), len(treatments)):
            raise ValueError(f"uplift must have shape (rows, treatments) = {(len(actions), len(treatments))}")
        weight = np.ones(len(actions)) if sample_weight is None else checked_sample_weight(sample_weight, len(actions))
        slopes, intercepts = [], []
        for j, action in enumerate(treatments):
            rows = (actions == action) | (actions == control)
            table = uplift_calibration(
                y[rows], (actions[rows] == action).astype(int), uplift[rows, j], self.n_bins, weight[rows]
            )
            summary = calibration_summary(table)
            if self.shrink:
                slope = float(np.clip(_shrunk_slope(summary), self.min_slope, self.max_slope))
                intercept = _shrunk_level(table, summary) - slope * summary["mean_predicted"]
            else:
                slope = summary["slope"] if np.isfinite(summary["slope"]) else 0.0
                slope = float(np.clip(slope, self.min_slope, self.max_slope))
                intercept = summary["mean_observed"] - slope * summary["mean_predicted"]
            slopes.append(slope)
            intercepts.append(float(intercept) if np.isfinite(intercept) else 0.0)
        self.treatments_ = list(treatments)
        self.slope_ = np.array(slopes)
        self.intercept_ = np.array(intercepts)
        return self

    def transform(self, uplift: np.ndarray) -> np.ndarray:
        """Recalibrated uplift, same shape as `uplift` (columns in `treatments_` order)."""
        if not hasattr(self, "slope_"):
            raise NotFittedError("UpliftRecalibrator is not fitted; call fit first")
        return np.asarray(uplift, dtype=float) * self.slope_[None, :] + self.intercept_[None, :]


def shrunk_correction(correction: float, se: float) -> float:
    """correction·max(0, 1 − se²/correction²): none within one standard error of 0, nearly all of a large one."""
    if not np.isfinite(correction) or correction == 0.0 or not np.isfinite(se):
        return 0.0
    return float(correction * max(0.0, 1.0 - se**2 / correction**2))


def _shrunk_slope(summary: dict[str, float]) -> float:
    """1 + the shrunk correction of the WLS slope (1 when the line is undefined)."""
    if not np.isfinite(summary["slope"]):
        return 1.0
    return 1.0 + shrunk_correction(summary["slope"] - 1.0, summary["slope_se"])


def _shrunk_level(table: pd.DataFrame, summary: dict[str, float]) -> float:
    """The mean predicted uplift plus the shrunk correction toward the mean observed one (usable bins)."""
    se = table["se"].to_numpy(float)
    usable = np.isfinite(se) & (se > 0) & np.isfinite(table["observed"].to_numpy(float))
    weight = table["weight"].to_numpy(float)[usable]
    if not usable.any() or weight.sum() <= 0:
        return summary["mean_predicted"] if np.isfinite(summary["mean_predicted"]) else 0.0
    level_se = float(np.sqrt(np.sum((weight * se[usable]) ** 2)) / weight.sum())
    return summary["mean_predicted"] + shrunk_correction(summary["mean_observed"] - summary["mean_predicted"], level_se)

