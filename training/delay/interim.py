"""Interim metrics and delay-corrected labels: what is realised, plus the expected remainder of pending exposures.

At time as_of each exposure i (a row of `observed_outcomes`) is exactly one of:

    realised   converted by as_of: its conversion and revenue so far count once, as realised, never as pending;
    closed     not converted and its window is over (c_i >= W): final, it adds nothing;
    pending    not converted, c_i < W: it converts later within W with
               q_i = p_g·(F_g(W) − F_g(c_i)) / (1 − p_g·F_g(c_i))      (g = its group's delay model)

Estimated final metrics of a set of exposures (e.g. one day's):

    conversions = #realised + Σ_pending q_i            conversion rate = conversions / n
    revenue     = Σ realised revenue + Σ_pending q_i·v_g

with v_g the mean revenue per conversion of group g, from realised conversions (`revenue_per_conversion`: the
group's own mean with at least `min_conversions` conversions, else the pooled mean). "Naive" is the realised part
alone. A realised conversion's revenue is taken as final: a second purchase within the window of an exposure that
already converted is not forecast (the simulated shop has at most one purchase per session).

Training labels for rows whose window is still open (`delay_corrected_labels`): the expected final label,
label_conversion = 1 (realised), q_i (pending), 0 (closed), and label_revenue = realised revenue or q_i·v_g. For a
squared-error learner (the T-learner's revenue regressors) the expected label has the same minimiser as the
unknown final label, so fresh rows can be used without the bias of counting them as non-converted, and without
dropping the newest data. For a log-loss classifier use `weighted_binary_labels`: a pending row becomes a positive
with weight q_i and a negative with weight 1 − q_i, the same expected loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

OBSERVED_COLUMNS = ("converted", "elapsed_hours", "revenue")


class PendingModel(Protocol):
    """Anything that gives P(converts within W | not converted after c hours) per row."""

    window_hours: float

    def pending_probability(self, elapsed_hours: Any, groups: Any = None) -> np.ndarray:
        """q_i per row."""
        ...


@dataclass(frozen=True)
class InterimEstimate:
    """Realised outcomes of a set of exposures plus the expected remainder of the pending ones."""

    n_exposures: int
    realised_conversions: int
    realised_revenue: float
    pending_exposures: int
    expected_late_conversions: float
    expected_late_revenue: float

    @property
    def conversions(self) -> float:
        """Estimated final conversions: realised + expected late."""
        return self.realised_conversions + self.expected_late_conversions

    @property
    def revenue(self) -> float:
        """Estimated final revenue: realised + expected late."""
        return self.realised_revenue + self.expected_late_revenue

    @property
    def conversion_rate(self) -> float:
        """Estimated final conversions per exposure."""
        return self.conversions / self.n_exposures if self.n_exposures else float("nan")

    @property
    def naive_conversion_rate(self) -> float:
        """Realised conversions per exposure (what a dashboard shows without delay correction)."""
        return self.realised_conversions / self.n_exposures if self.n_exposures else float("nan")


def revenue_per_conversion(
    revenue: Any, converted: Any, groups: Any = None, min_conversions: int = 30
) -> dict[Any, float]:
    """Mean revenue per realised conversion per group (pooled mean where a group has < min_conversions); key None
    holds the pooled mean."""
    rev = np.asarray(revenue, dtype=np.float64).ravel()
    conv = np.asarray(converted).ravel().astype(bool)
    if len(rev) != len(conv):
        raise ValueError(f"revenue and converted differ in length ({len(rev)} vs {len(conv)})")
    if not conv.any():
        raise ValueError("no realised conversions: revenue per conversion is unknown; use more history")
    pooled = float(rev[conv].mean())
    values: dict[Any, float] = {None: pooled}
    if groups is not None:
        labels = np.asarray(groups, dtype=object).ravel()
        for group in pd.unique(labels):
            mask = conv & (labels == group)
            values[group] = float(rev[mask].mean()) if mask.sum() >= min_conversions else pooled
    return values


def _pending(
    model: PendingModel, observed: pd.DataFrame, group_column: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """converted and pending masks, q per row (0 for realised and closed rows) and the group labels."""
    missing = [c for c in (*OBSERVED_COLUMNS, *([group_column] if group_column else [])) if c not in observed]
    if missing:
        raise ValueError(f"observed lacks columns {missing}; build it with training.delay.observed_outcomes")
    converted = observed["converted"].to_numpy(dtype=bool)
    elapsed = observed["elapsed_hours"].to_numpy(dtype=np.float64)
    groups = None if group_column is None else observed[group_column].to_numpy(dtype=object)
    pending = ~converted & (elapsed < model.window_hours)
    q = np.where(pending, model.pending_probability(elapsed, groups), 0.0)
    return converted, pending, q, groups


def _values(value_per_conversion: float | Mapping[Any, float], groups: np.ndarray | None, n: int) -> np.ndarray:
    """v_g per row from a number or a group → value mapping (None key = fallback for unlisted groups)."""
    if not isinstance(value_per_conversion, Mapping):
        return np.full(n, float(value_per_conversion))
    if groups is None:
        if None not in value_per_conversion:
            raise ValueError("value_per_conversion needs a None (pooled) key when no group_column is given")
        return np.full(n, float(value_per_conversion[None]))
    unknown = sorted({str(g) for g in pd.unique(groups) if g not in value_per_conversion})
    if unknown and None not in value_per_conversion:
        raise ValueError(f"value_per_conversion has no value for groups {unknown} and no None (pooled) fallback")
    fallback = value_per_conversion.get(None, float("nan"))
    return np.array([float(value_per_conversion.get(g, fallback)) for g in groups], dtype=np.float64)


def interim_estimate(
    model: PendingModel,
    observed: pd.DataFrame,
    value_per_conversion: float | Mapping[Any, float],
    group_column: str | None = None,
) -> InterimEstimate:
    """Realised + expected late conversions and revenue of the exposures in `observed` (see the module docstring)."""
    converted, pending, q, groups = _pending(model, observed, group_column)
    values = _values(value_per_conversion, groups, len(observed))
    return InterimEstimate(
        n_exposures=len(observed),
        realised_conversions=int(converted.sum()),
        realised_revenue=float(observed["revenue"].to_numpy(dtype=np.float64)[converted].sum()),
        pending_exposures=int(pending.sum()),
        expected_late_conversions=float(q[pending].sum()),
        expected_late_revenue=float((q * values)[pending].sum()),
    )


def delay_corrected_labels(
    model: PendingModel,
    observed: pd.DataFrame,
    value_per_conversion: float | Mapping[Any, float],
    group_column: str | None = None,
) -> pd.DataFrame:
    """Per row (index kept): final, p_convert_later, label_conversion and label_revenue (expected final labels)."""
    converted, pending, q, groups = _pending(model, observed, group_column)
    values = _values(value_per_conversion, groups, len(observed))
    revenue = observed["revenue"].to_numpy(dtype=np.float64)
    return pd.DataFrame(
        {
            "final": ~pending,
            "p_convert_later": q,
            "label_conversion": np.where(converted, 1.0, q),
            "label_revenue": np.where(converted, revenue, q * values),
        },
        index=observed.index,
    )


def weighted_binary_labels(labels: pd.DataFrame) -> pd.DataFrame:
    """Rows for a log-loss classifier: final rows once (weight 1), pending rows twice: (1, q) and (0, 1 − q)."""
    final = labels["final"].to_numpy(dtype=bool)
    q = labels["p_convert_later"].to_numpy(dtype=np.float64)
    firm = pd.DataFrame({"label": labels["label_conversion"].to_numpy()[final].round().astype(np.int64),
                         "weight": 1.0}, index=labels.index[final])
    positive = pd.DataFrame({"label": 1, "weight": q[~final]}, index=labels.index[~final])
    negative = pd.DataFrame({"label": 0, "weight": 1.0 - q[~final]}, index=labels.index[~final])
    return pd.concat([firm, positive, negative])
