"""Uplift metrics with the definitions of scikit-uplift (sklift 0.5): Qini curve, normalised Qini AUC, uplift@k.

Qini curve at the top-n rows by predicted uplift (ties grouped): Y_t(n) − Y_c(n)·N_t(n)/N_c(n), where Y are outcome
sums and N row counts of treated (t) and control (c) rows among them (0 while N_c = 0). The Qini coefficient is
(AUC_model − AUC_random) / (AUC_perfect − AUC_random): 1 for a perfect ranking, 0 for random, negative if worse.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def qini_curve(y: np.ndarray, uplift: np.ndarray, treatment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points (n, Qini(n)) at every distinct predicted-uplift threshold, starting at (0, 0)."""
    y, uplift, treatment = _checked(y, uplift, treatment)
    order = np.argsort(uplift, kind="mergesort")[::-1]
    y, uplift, treatment = y[order], uplift[order], treatment[order]
    cut = np.r_[np.where(np.diff(uplift))[0], uplift.size - 1]
    n_t = np.cumsum(treatment)[cut]
    y_t = np.cumsum(y * treatment)[cut]
    n_all = cut + 1
    y_all = np.cumsum(y)[cut]
    n_c, y_c = n_all - n_t, y_all - y_t
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where(n_c > 0, y_t - y_c * n_t / np.where(n_c > 0, n_c, 1), 0.0)
    return np.r_[0, n_all].astype(float), np.r_[0.0, values]


def perfect_qini_curve(y: np.ndarray, treatment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Qini curve of the best possible ranking (negative effects allowed): treated responders first, control last."""
    y, _, treatment = _checked(y, np.zeros(len(y)), treatment)
    return qini_curve(y, y * treatment - y * (1 - treatment), treatment)


def qini_coefficient(y: np.ndarray, uplift: np.ndarray, treatment: np.ndarray) -> float:
    """Normalised Qini AUC: (model − random) / (perfect − random)."""
    x, q = qini_curve(y, uplift, treatment)
    xp, qp = perfect_qini_curve(y, treatment)
    random = np.trapezoid([0.0, qp[-1]], [0.0, xp[-1]])
    perfect = np.trapezoid(qp, xp) - random
    if perfect == 0:
        raise ValueError("the perfect Qini curve equals random (no outcome difference); the coefficient is undefined")
    return float((np.trapezoid(q, x) - random) / perfect)


def uplift_at_k(y: np.ndarray, uplift: np.ndarray, treatment: np.ndarray, k: float = 0.3) -> float:
    """Mean outcome of treated minus control among the top-k fraction of all rows by predicted uplift."""
    if not 0 < k <= 1:
        raise ValueError(f"k must be a fraction in (0, 1]; got {k}")
    y, uplift, treatment = _checked(y, uplift, treatment)
    top = np.argsort(uplift, kind="mergesort")[::-1][: max(1, int(np.ceil(k * len(y))))]
    t, c = top[treatment[top] == 1], top[treatment[top] == 0]
    if len(t) == 0 or len(c) == 0:
        raise ValueError(f"the top {k:.0%} holds no {'treated' if len(t) == 0 else 'control'} rows")
    return float(y[t].mean() - y[c].mean())


def multi_action_qini(
    y: np.ndarray, actions: np.ndarray, uplift: np.ndarray, treatments: Sequence[str], control: str
) -> dict[str, float]:
    """Qini coefficient per treatment on its rows and the control rows; plus their unweighted mean under "mean"."""
    actions = np.asarray(actions).astype(str)
    scores: dict[str, float] = {}
    for j, action in enumerate(treatments):
        rows = (actions == action) | (actions == control)
        scores[action] = qini_coefficient(y[rows], uplift[rows, j], (actions[rows] == action).astype(int))
    scores["mean"] = float(np.mean(list(scores.values())))
    return scores


def _checked(y: np.ndarray, uplift: np.ndarray, treatment: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, uplift, treatment = np.asarray(y, float), np.asarray(uplift, float), np.asarray(treatment)
    if not (len(y) == len(uplift) == len(treatment)):
        raise ValueError(f"y, uplift and treatment lengths differ: {len(y)}, {len(uplift)}, {len(treatment)}")
    if len(y) == 0:
        raise ValueError("uplift metrics need at least one row")
    if not np.isin(treatment, (0, 1)).all():
        raise ValueError("treatment must be 0 (control) or 1 (treated)")
    return y, uplift, treatment.astype(int)
