"""Evaluation figures: Qini and uplift curves per action, and predicted-vs-observed uplift calibration.

Every function returns a matplotlib Figure (Agg backend: nothing is shown); the caller saves or logs it and should
close it (`matplotlib.pyplot.close(figure)`) when done.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are written to PNG, never shown
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from training.calibration import calibration_summary  # noqa: E402
from training.metrics import qini_curve, uplift_curve  # noqa: E402


def qini_figure(
    y: np.ndarray,
    actions: np.ndarray,
    uplift: np.ndarray,
    treatments: Sequence[str],
    control: str,
    scores: Mapping[str, float],
    sample_weight: np.ndarray | None = None,
    outcome: str = "revenue",
    title: str = "Holdout Qini curves",
) -> Figure:
    """One Qini curve per treatment (its rows and the control rows) with its dotted random line, on one axes.

    `scores` maps each treatment (and optionally "mean") to its Qini coefficient, shown in the legend and title.
    The x axis is the fraction of rows targeted (of total weight with `sample_weight`): 2 lines per treatment.
    """
    return _curves_figure(
        qini_curve, "Qini", y, actions, uplift, treatments, control, scores, sample_weight,
        f"incremental {outcome} (Qini: Y_t − Y_c·N_t/N_c)", title,
    )


def uplift_curve_figure(
    y: np.ndarray,
    actions: np.ndarray,
    uplift: np.ndarray,
    treatments: Sequence[str],
    control: str,
    scores: Mapping[str, float],
    sample_weight: np.ndarray | None = None,
    outcome: str = "revenue",
    title: str = "Holdout uplift curves",
) -> Figure:
    """One uplift curve per treatment with its dotted random line; `scores` are AUUCs (as `multi_action_auuc`)."""
    return _curves_figure(
        uplift_curve, "AUUC", y, actions, uplift, treatments, control, scores, sample_weight,
        f"incremental {outcome} ((ȳ_t − ȳ_c)·n)", title,
    )


POOLED_PANEL = "all actions pooled (the promotion gate's figure)"
"""Title of the calibration figure's first panel: the bins of every action together, as the gate judges them."""


def calibration_figure(
    table_or_tables: pd.DataFrame | Mapping[str, pd.DataFrame], outcome: str = "revenue",
    pooled: pd.DataFrame | None = None,
) -> Figure:
    """Predicted vs observed uplift per bin with interval error bars, the fitted line and the y = x line.

    Takes one `uplift_calibration` table or a dict action → table (one panel each). `pooled` is the table the
    promotion gate judges (every action's bins together; `training.train.evaluate_uplift`): drawn first, its title's
    slope is the gate's `holdout_calibration_slope`. A single action's few bins give a much noisier slope, so each
    title shows the slope with its standard error. Axes fit the bin points (intervals may run past the edge).
    """
    tables = {"": table_or_tables} if isinstance(table_or_tables, pd.DataFrame) else dict(table_or_tables)
    if not tables:
        raise ValueError("calibration_figure needs at least one table")
    panels = ({POOLED_PANEL: pooled} if pooled is not None else {}) | tables
    n = len(panels)
    columns = min(n, 3)
    rows = math.ceil(n / columns)
    figure = Figure(figsize=(4.6 * columns, 4.2 * rows))  # not pyplot's: nothing keeps it once the caller drops it
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[n:]:
        figure.delaxes(ax)
    for ax, (name, table) in zip(axes.flat, panels.items()):
        _calibration_panel(ax, table, name if name == POOLED_PANEL or not name else f"{name} alone", outcome)
    figure.suptitle("Uplift calibration by predicted-uplift bin")
    figure.tight_layout()
    return figure


def _calibration_panel(ax: Axes, table: pd.DataFrame, name: str, outcome: str) -> None:
    alpha = table.attrs.get("alpha", 0.05)
    groups = table.groupby("action", sort=False) if name == POOLED_PANEL and "action" in table else [("", table)]
    for action, group in groups:
        observed = group["observed"].to_numpy(float)
        errors = np.vstack([observed - group["lower"].to_numpy(float), group["upper"].to_numpy(float) - observed])
        ax.errorbar(group["predicted"].to_numpy(float), observed, yerr=errors, fmt="o", markersize=4, capsize=3,
                    linewidth=1, label=f"{action or 'observed'} ± {1 - alpha:.0%} interval")
    predicted, observed = table["predicted"].to_numpy(float), table["observed"].to_numpy(float)
    (x_low, x_high), (y_low, y_high) = _span(predicted), _span(np.concatenate([observed, predicted]))
    ax.set_xlim(x_low, x_high)
    ax.set_ylim(y_low, y_high)
    ax.plot([x_low, x_high], [x_low, x_high], linestyle="--", color="grey", linewidth=1,
            label="perfect calibration (y = x)")
    s = calibration_summary(table)
    if np.isfinite(s["slope"]):
        ax.plot([x_low, x_high], [s["intercept"] + s["slope"] * x_low, s["intercept"] + s["slope"] * x_high],
                color="black", linewidth=1, label=f"fitted (1/se² weights): slope {s['slope']:.2f}")
        figures = [f"slope {s['slope']:.2f} ± {s['slope_se']:.2f}"]
    elif s["n_bins_usable"] < 2:  # a line needs 2 bins with an interval in both arms
        figures = [f"slope n/a ({s['n_bins_usable']:.0f} usable bins)"]
    else:  # e.g. an action whose recalibrated uplift is one constant
        figures = ["slope n/a (every bin predicts the same uplift)"]
    if np.isfinite(s["coverage"]):
        figures += [f"coverage {s['coverage']:.0%}", f"MAE {s['mean_abs_error']:.3g}"]
    ax.set_title((f"{name}\n" if name else "") + ", ".join(figures), fontsize=9)
    ax.set_xlabel("predicted uplift (bin mean)")
    ax.set_ylabel(f"observed uplift in {outcome} (treated − control)")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)


def _span(values: np.ndarray, pad: float = 0.1) -> tuple[float, float]:
    """Axis limits around the finite values with `pad` of their range on each side (±0.5 around a single value)."""
    values = values[np.isfinite(values)]
    if not values.size:
        return -1.0, 1.0
    low, high = float(values.min()), float(values.max())
    flat = high - low <= 1e-9 * max(1.0, abs(low), abs(high))  # as training.calibration: one value, up to rounding
    margin = 0.5 if flat else pad * (high - low)
    return low - margin, high + margin


def _curves_figure(
    curve: Callable[..., tuple[np.ndarray, np.ndarray]],
    score_name: str,
    y: np.ndarray,
    actions: np.ndarray,
    uplift: np.ndarray,
    treatments: Sequence[str],
    control: str,
    scores: Mapping[str, float],
    sample_weight: np.ndarray | None,
    ylabel: str,
    title: str,
) -> Figure:
    y, actions, uplift = np.asarray(y, dtype=float), np.asarray(actions).astype(str), np.asarray(uplift, dtype=float)
    weight = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
    figure = Figure(figsize=(8, 5))  # not pyplot's: nothing keeps it once the caller drops it
    ax = figure.subplots()
    for j, action in enumerate(treatments):
        rows = (actions == action) | (actions == control)
        w = None if weight is None else weight[rows]
        x, values = curve(y[rows], uplift[rows, j], (actions[rows] == action).astype(int), w)
        label = f"{action} ({score_name} {scores[action]:.3f})" if action in scores else str(action)
        line = ax.plot(x / x[-1], values, label=label)[0]
        ax.plot([0, 1], [0, values[-1]], linestyle=":", color=line.get_color(), linewidth=0.8)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], linestyle=":", color="grey", linewidth=0.8))
    labels.append("random targeting (dotted, same colour)")
    ax.legend(handles, labels, fontsize=7)
    ax.set_xlabel("fraction of users targeted (by predicted uplift)" + (", by weight" if weight is not None else ""))
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title} — mean {score_name} {scores['mean']:.3f}" if "mean" in scores else title)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure
