"""Experiment readout: per experiment and arm, conversion and revenue per user, each arm against the control arm.

The unit of randomisation is the user, so decisions are first rolled up per (experiment, arm, user_key): a user
converted if any of their decisions converted, and their revenue is the sum over decisions. Arms are then compared
on these per-user values with Welch's t interval (Welch–Satterthwaite degrees of freedom): unequal variances and
unequal arm sizes are the norm (a 10% holdout, skewed revenue).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: figures are written to PNG, never shown
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy import stats  # noqa: E402

REQUIRED_COLUMNS = ("user_key", "experiments", "converted", "revenue")
# The two per-user metrics compared between arms: (readout column prefix, per-user column).
METRICS = (("conversion", "converted_user"), ("revenue", "revenue_user"))
READOUT_COLUMNS = [
    "experiment", "arm", "control_arm", "is_control", "n_users", "n_decisions",
    "conversion_rate", "conversion_rate_se", "revenue_per_user", "revenue_per_user_se",
    "conversion_diff", "conversion_diff_se", "conversion_ci_low", "conversion_ci_high", "conversion_p_value",
    "conversion_lift",
    "revenue_diff", "revenue_diff_se", "revenue_ci_low", "revenue_ci_high", "revenue_p_value", "revenue_lift",
    "note",
]


def assignment_rows(decisions: pd.DataFrame) -> pd.DataFrame:
    """One row per (decision, experiment): user_key, experiment, arm, converted, revenue.

    `experiments` holds {experiment: arm} per decision, as a dict or its JSON string; null, "" and {} mean the
    decision was in no experiment. Anything else is refused with the offending row position.
    """
    missing = [column for column in REQUIRED_COLUMNS if column not in decisions.columns]
    if missing:
        raise ValueError(f"the decision frame lacks columns {missing}; it needs {list(REQUIRED_COLUMNS)}")
    converted = pd.to_numeric(decisions["converted"], errors="coerce").to_numpy(float)
    revenue = pd.to_numeric(decisions["revenue"], errors="coerce").to_numpy(float)
    bad_converted = ~np.isin(converted, (0.0, 1.0))
    if bad_converted.any():
        raise ValueError(f"converted must be 0 or 1; {int(bad_converted.sum())} rows are not (null or other values)")
    if not np.isfinite(revenue).all():
        raise ValueError(f"revenue must be a finite number; {int((~np.isfinite(revenue)).sum())} rows are not")
    positions, experiments, arms = [], [], []
    for position, value in enumerate(decisions["experiments"].tolist()):
        for experiment, arm in _parse_experiments(value, position).items():
            positions.append(position)
            experiments.append(str(experiment))
            arms.append(str(arm))
    index = np.asarray(positions, dtype=int)
    return pd.DataFrame(
        {
            "user_key": decisions["user_key"].astype(str).to_numpy()[index],
            "experiment": experiments,
            "arm": arms,
            "converted": converted[index],
            "revenue": revenue[index],
        }
    )


def _parse_experiments(value: Any, position: int) -> Mapping[str, Any]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return {}
    if isinstance(value, str) and not value.strip():
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"experiments at row {position} is not valid JSON: {error}") from error
    if not isinstance(value, Mapping):
        raise ValueError(f"experiments at row {position} must map experiment → arm; got {type(value).__name__}")
    return value


def user_outcomes(decisions: pd.DataFrame) -> pd.DataFrame:
    """Per (experiment, arm, user_key): converted_user = max(converted), revenue_user = sum(revenue), n_decisions.

    Raises ValueError when a user appears in more than one arm of an experiment: assignment is per user, so that
    means the log mixes configurations (a changed salt, name or weights) and no comparison would be valid.
    """
    rows = assignment_rows(decisions)
    per_user = (
        rows.groupby(["experiment", "arm", "user_key"], sort=True)
        .agg(converted_user=("converted", "max"), revenue_user=("revenue", "sum"), n_decisions=("converted", "size"))
        .reset_index()
    )
    arms_per_user = per_user.groupby(["experiment", "user_key"])["arm"].nunique()
    crossed = arms_per_user[arms_per_user > 1]
    if not crossed.empty:
        by_experiment = crossed.groupby(level="experiment").size().to_dict()
        example = crossed.index[0]
        raise ValueError(
            f"{len(crossed)} user_keys appear in more than one arm ({by_experiment}; e.g. {example[1]!r} in "
            f"{example[0]!r}); assignment must be per user: was the experiment's config changed mid-run?"
        )
    return per_user


def experiment_readout(
    decisions: pd.DataFrame, control_arms: Mapping[str, str], alpha: float = 0.05
) -> pd.DataFrame:
    """One row per experiment × arm: users, decisions, rates with standard errors, and each arm vs the control.

    `control_arms` maps experiment → control arm (`ExperimentsConfig.control_arms()`). Differences are arm −
    control with a (1 − alpha) Welch interval, two-sided p-value and relative lift (diff / control mean). They are
    NaN on the control row, and NaN with a `note` when the control is unknown or has no users, or an arm has fewer
    than 2 users.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1); got {alpha}")
    per_user = user_outcomes(decisions)
    records = []
    for experiment, users in per_user.groupby("experiment", sort=True):
        control = control_arms.get(experiment)
        groups = {arm: frame for arm, frame in users.groupby("arm", sort=True)}
        for arm, frame in groups.items():
            record = {"experiment": experiment, "arm": arm, "control_arm": control, "is_control": arm == control}
            record.update(_arm_summary(frame))
            record.update(_comparison(frame, groups.get(control), arm, control, alpha))
            records.append(record)
    readout = pd.DataFrame.from_records(records, columns=READOUT_COLUMNS)
    readout.attrs["alpha"] = alpha
    return readout


def _arm_summary(frame: pd.DataFrame) -> dict[str, float]:
    n = len(frame)
    summary: dict[str, float] = {"n_users": n, "n_decisions": int(frame["n_decisions"].sum())}
    for key, column in (("conversion_rate", "converted_user"), ("revenue_per_user", "revenue_user")):
        values = frame[column].to_numpy(float)
        summary[key] = float(values.mean())
        summary[f"{key}_se"] = float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return summary


def _comparison(
    arm_frame: pd.DataFrame, control_frame: pd.DataFrame | None, arm: str, control: str | None, alpha: float
) -> dict[str, Any]:
    empty: dict[str, Any] = {
        f"{name}_{field}": float("nan")
        for name, _ in METRICS
        for field in ("diff", "diff_se", "ci_low", "ci_high", "p_value", "lift")
    }
    if control is None:
        return {**empty, "note": "control arm unknown: experiment is not in the experiments config"}
    if arm == control:
        return {**empty, "note": ""}
    if control_frame is None:
        return {**empty, "note": f"control arm {control!r} has no users in this data"}
    if len(arm_frame) < 2 or len(control_frame) < 2:
        return {**empty, "note": "fewer than 2 users in this arm or the control: no variance, no interval"}
    result: dict[str, Any] = {"note": ""}
    for name, column in METRICS:
        treated, baseline = arm_frame[column].to_numpy(float), control_frame[column].to_numpy(float)
        diff, se, low, high, p_value = welch_difference(treated, baseline, alpha)
        base_mean = baseline.mean()
        result.update({
            f"{name}_diff": diff, f"{name}_diff_se": se, f"{name}_ci_low": low, f"{name}_ci_high": high,
            f"{name}_p_value": p_value, f"{name}_lift": diff / base_mean if base_mean != 0 else float("nan"),
        })
    return result


def welch_difference(
    treated: np.ndarray, control: np.ndarray, alpha: float = 0.05
) -> tuple[float, float, float, float, float]:
    """Difference of means (treated − control): estimate, standard error, (1 − alpha) Welch interval, p-value.

    Both samples need at least 2 values. With zero variance in both the interval collapses to the estimate and
    the p-value is 1 when the means are equal, else 0 (the limit of the t test).
    """
    treated, control = np.asarray(treated, dtype=float), np.asarray(control, dtype=float)
    if len(treated) < 2 or len(control) < 2:
        raise ValueError(f"Welch needs at least 2 values per sample; got {len(treated)} and {len(control)}")
    diff = float(treated.mean() - control.mean())
    v_t, v_c = treated.var(ddof=1) / len(treated), control.var(ddof=1) / len(control)
    se = float(np.sqrt(v_t + v_c))
    if se == 0.0:
        return diff, 0.0, diff, diff, 1.0 if diff == 0.0 else 0.0
    dof = (v_t + v_c) ** 2 / (v_t**2 / (len(treated) - 1) + v_c**2 / (len(control) - 1))
    half_width = float(stats.t.ppf(1.0 - alpha / 2.0, dof)) * se
    p_value = float(2.0 * stats.t.sf(abs(diff) / se, dof))
    return diff, se, diff - half_width, diff + half_width, p_value


def readout_figure(readout: pd.DataFrame) -> Figure:
    """Arm − control differences with their intervals, one row per experiment/arm: revenue per user and conversion."""
    alpha = readout.attrs.get("alpha", 0.05)
    compared = readout.loc[~readout["is_control"].astype(bool)].reset_index(drop=True)
    labels = [f"{row.experiment}: {row.arm} − {row.control_arm}" for row in compared.itertuples()]
    rows = max(len(compared), 1)
    figure = Figure(figsize=(11, 1.8 + 0.6 * rows))  # not pyplot's: nothing keeps it once dropped
    axes = figure.subplots(1, 2, sharey=True, squeeze=False)
    y = np.arange(len(compared))
    for ax, (name, title) in zip(axes.flat, [("revenue", "revenue per user"), ("conversion", "conversion rate")]):
        diff = compared[f"{name}_diff"].to_numpy(float)
        low, high = compared[f"{name}_ci_low"].to_numpy(float), compared[f"{name}_ci_high"].to_numpy(float)
        shown = np.isfinite(diff)
        ax.errorbar(diff[shown], y[shown], xerr=np.vstack([diff - low, high - diff])[:, shown], fmt="o", capsize=4,
                    linewidth=1.2)
        for position, estimate, lower, upper in zip(y[shown], diff[shown], low[shown], high[shown]):
            ax.annotate(f"{estimate:+.3g} [{lower:.3g}, {upper:.3g}]", (estimate, position), fontsize=7,
                        xytext=(0, 6), textcoords="offset points", ha="center")
        for position in y[~shown]:  # a comparison that could not be made (see the readout's note)
            ax.text(0.5, position, "no comparison (see note)", transform=ax.get_yaxis_transform(), fontsize=8,
                    color="grey", ha="center", va="center")
        ax.axvline(0.0, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"{title}: arm − control", fontsize=10)
        ax.set_xlabel(f"difference in {title}")
        ax.grid(alpha=0.3)
    axes[0, 0].set_yticks(y, labels)
    axes[0, 0].set_ylim(rows - 0.4, -0.6)  # first readout row on top
    if compared.empty:
        axes[0, 0].text(0.5, 0.5, "no arm to compare", transform=axes[0, 0].transAxes, ha="center")
    figure.suptitle(f"Experiment readout: arm − control per user, {1 - alpha:.0%} Welch intervals", fontsize=11)
    figure.tight_layout()
    return figure
