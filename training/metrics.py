"""Uplift and off-policy metrics. The curve metrics follow scikit-uplift (sklift 0.5) except where noted; exactly:

Curves — rows sorted by predicted uplift, descending (stable mergesort, then reversed, as sklift); ties are grouped:
a point is placed only after the last row of each distinct predicted value, and every curve starts at (0, 0).
At such a cut n, with Y_t, Y_c the outcome sums and N_t, N_c the row counts of treated and control rows among the
top n (with `sample_weight` w: Y = Σ w·y and N = Σ w, and the x coordinate is Σ w instead of n):

- `qini_curve`:    Qini(n)   = Y_t − Y_c·N_t/N_c                       (the ratio N_t/N_c is 0 while N_c = 0)
- `uplift_curve`:  Uplift(n) = (Y_t/N_t − Y_c/N_c)·n                   (each mean is 0 while its group is empty)
- `perfect_qini_curve`: the Qini curve of the score y·t − y·(1 − t) (treated by outcome descending, control by
  outcome ascending; negative effects allowed).
- `perfect_uplift_curve`: sklift's optimum ranking, the uplift curve of the score 2·[r = t] + s with r = [y > 0]
  (responder) and s = r if #(control responders) > #(treated non-responders) else t; ties within those four groups
  are broken by y·t − y·(1 − t) (a no-op for 0/1 outcomes, so the ranking is sklift's there; for revenue it puts big
  treated spenders first and big control spenders last). Counts are weighted when weights are given.
- `qini_coefficient` / `uplift_auc_score` (AUUC): (A_model − A_random)/(A_perfect − A_random), A the trapezoidal
  area under the curve and the random curve the straight line from (0, 0) to the curve's last point (same for
  model and perfect). 1 for the perfect ranking, 0 for random, negative if worse; can exceed 1 (the sklift
  "perfect" uplift ranking is a heuristic, not a maximiser). Undefined (ValueError) when A_perfect = A_random.
- `cumulative_gain`: the uplift (default) or Qini curve, linearly interpolated at x = k/n_bins · x_last for
  k = 1..n_bins (with no ties and n divisible by n_bins these are exact curve points: the value at 10 %, 20 %, …).
- `uplift_at_k`: mean treated outcome − mean control outcome among the top ⌈k·n⌉ rows; nan when those rows hold
  no treated or no control row (scikit-uplift's answer; raising stopped a whole retrain on one thin arm).
- `multi_action_qini` / `multi_action_auuc`: the coefficient per treatment on its rows plus the control rows
  (treatment j scored with uplift column j), and the unweighted mean over treatments under "mean".
- `pehe`: √(mean over rows of (τ̂ − τ)²), per column for 2-D input.

Empty groups follow sklift 0.5 exactly: each ratio is 0 while the group it divides by is empty (sklift's
`np.divide(..., where=den != 0)`), so Qini(n) = Y_t while no control row is in the top n.

Weights: `sample_weight` is meant for inverse logged propensity weights 1/p(logged action | x), which re-weight
each arm to the whole population; with weights None the code is the unweighted one (bit-identical), weights all 1
give exactly the unweighted values and weight 2 equals a duplicated row. Units: with such weights on one
treatment-vs-control pair, Σ w over the treated rows and over the control rows each estimate the population size, so
x = Σ w estimates twice the population and `uplift_curve` / `cumulative_gain` values are twice the per-population
incremental outcome (the Qini curve's Y_t − Y_c·N_t/N_c is already per population); the normalised coefficients
are scale-free.

Off-policy value of a deterministic target policy π from logged data (y_i, a_i, p_i = logging probability of a_i),
m_i = 1[a_i = π(x_i)], w_i = m_i/p_i; each returns a `PolicyValue(value, se)` with a normal-approximation se:

- `policy_value_ips`:   V = (1/n) Σ w_i·y_i;                  se = sd(w_i·y_i)/√n
- `policy_value_snips`: V = Σ w_i·y_i / Σ w_i;               se = √(Σ w_i²·(y_i − V)² · n/(n − 1)) / Σ w_i (delta)
- `policy_value_dr`:    V = (1/n) Σ [μ̂(x_i, π(x_i)) + w_i·(y_i − μ̂(x_i, a_i))];  se = sd(terms)/√n
(sd with ddof = 1). DR is unbiased if either the propensities (here logged, hence exact) or μ̂ are right.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy.stats import norm


def qini_curve(
    y: np.ndarray, uplift: np.ndarray, treatment: np.ndarray, sample_weight: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Points (n, Qini(n)) at every distinct predicted-uplift threshold, starting at (0, 0).

    Qini(n) = Y_t − Y_c·N_t/N_c (the ratio is 0 while N_c = 0, as in sklift). With `sample_weight`, sums and counts are weighted sums and the
    x coordinate is the cumulative weight.
    """
    n_all, n_t, n_c, y_t, y_c = _cumulative(y, uplift, treatment, sample_weight)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = y_t - y_c * np.where(n_c > 0, n_t / np.where(n_c > 0, n_c, 1), 0.0)
    return np.r_[0, n_all].astype(float), np.r_[0.0, values]


def perfect_qini_curve(
    y: np.ndarray, treatment: np.ndarray, sample_weight: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Qini curve of the best possible ranking (negative effects allowed): treated responders first, control last."""
    y, _, treatment = _checked(y, np.zeros(len(y)), treatment)
    return qini_curve(y, y * treatment - y * (1 - treatment), treatment, sample_weight)


def qini_coefficient(
    y: np.ndarray, uplift: np.ndarray, treatment: np.ndarray, sample_weight: np.ndarray | None = None
) -> float:
    """Normalised Qini AUC: (model − random) / (perfect − random)."""
    return _normalised_area(
        qini_curve(y, uplift, treatment, sample_weight), perfect_qini_curve(y, treatment, sample_weight),
        "the perfect Qini curve equals random (no outcome difference); the coefficient is undefined",
    )


def uplift_curve(
    y: np.ndarray, uplift: np.ndarray, treatment: np.ndarray, sample_weight: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Points (n, Uplift(n)) at every distinct predicted-uplift threshold, starting at (0, 0).

    Uplift(n) = (Y_t/N_t − Y_c/N_c)·n: the difference in mean outcome between treated and control rows among the
    top n, times n (a group's mean is 0 while it is empty, as in sklift). With `sample_weight`: weighted sums, weighted means and
    n = cumulative weight.
    """
    n_all, n_t, n_c, y_t, y_c = _cumulative(y, uplift, treatment, sample_weight)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_t = np.where(n_t > 0, y_t / np.where(n_t > 0, n_t, 1), 0.0)
        mean_c = np.where(n_c > 0, y_c / np.where(n_c > 0, n_c, 1), 0.0)
    values = (mean_t - mean_c) * n_all
    return np.r_[0, n_all].astype(float), np.r_[0.0, values]


def perfect_uplift_curve(
    y: np.ndarray, treatment: np.ndarray, sample_weight: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Uplift curve of sklift's optimum ranking (see the module docstring; the ranking is sklift's for 0/1 outcomes).

    Score 2·[r = t] + s, r = [y > 0], s = r if #control responders > #treated non-responders else t (weighted
    counts with `sample_weight`); ties inside the groups broken by y·t − y·(1 − t).
    """
    y, _, treatment = _checked(y, np.zeros(len(y)), treatment)
    w = np.ones(len(y)) if sample_weight is None else checked_sample_weight(sample_weight, len(y))
    responder = (y > 0).astype(int)
    control_responders = w[(responder == 1) & (treatment == 0)].sum()
    treated_non_responders = w[(responder == 0) & (treatment == 1)].sum()
    summand = responder if control_responders > treated_non_responders else treatment
    primary = 2 * (responder == treatment) + summand
    secondary = y * treatment - y * (1 - treatment)
    order = np.lexsort((secondary, primary))  # ascending by (primary, secondary)
    step = (np.diff(primary[order]) != 0) | (np.diff(secondary[order]) != 0)
    score = np.empty(len(y))
    score[order] = np.r_[0, np.cumsum(step)]  # dense rank: equal (primary, secondary) pairs stay tied
    return uplift_curve(y, score, treatment, sample_weight)


def uplift_auc_score(
    y: np.ndarray, uplift: np.ndarray, treatment: np.ndarray, sample_weight: np.ndarray | None = None
) -> float:
    """Normalised area under the uplift curve (AUUC, as sklift's `uplift_auc_score`).

    (A_model − A_random) / (A_perfect − A_random) with the curves of `uplift_curve` and `perfect_uplift_curve`.
    """
    return _normalised_area(
        uplift_curve(y, uplift, treatment, sample_weight), perfect_uplift_curve(y, treatment, sample_weight),
        "the perfect uplift curve equals random (no outcome difference); the AUUC is undefined",
    )


def cumulative_gain(
    y: np.ndarray,
    uplift: np.ndarray,
    treatment: np.ndarray,
    n_bins: int = 10,
    sample_weight: np.ndarray | None = None,
    curve: str = "uplift",
) -> tuple[np.ndarray, np.ndarray]:
    """(fractions k/n_bins, curve value there) for k = 1..n_bins: the gain from targeting the top 10 %, 20 %, …

    The curve (`uplift_curve` by default, `qini_curve` with curve="qini") is linearly interpolated at
    x = k/n_bins·x_last, x_last the row count (or total weight); cuts that fall inside a group of tied predictions
    get the straight line between the group's end points, the same line the AUC integrates.
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer; got {n_bins}")
    curves = {"uplift": uplift_curve, "qini": qini_curve}
    if curve not in curves:
        raise ValueError(f"curve must be one of {sorted(curves)}; got {curve!r}")
    x, values = curves[curve](y, uplift, treatment, sample_weight)
    fractions = np.arange(1, int(n_bins) + 1) / int(n_bins)
    return fractions, np.interp(fractions * x[-1], x, values)


UPLIFT_AT_K_STRATEGIES = ("overall", "by_group")


def uplift_at_k(
    y: np.ndarray, uplift: np.ndarray, treatment: np.ndarray, k: float | int = 0.3, strategy: str = "overall"
) -> float:
    """Mean outcome of treated minus control among the top rows by predicted uplift, as scikit-uplift computes it.

    `k`: a float in (0, 1), the share of rows, or an int in (0, n), a number of rows. `strategy`:
    * "overall": the first int(k·n) rows of all rows by uplift (k an int: the first k), then treated minus control
      among them;
    * "by_group": the first int(k·n_treated) treated rows and the first int(k·n_control) control rows, each group
      ranked by uplift on its own (k an int: k of each; more than a group holds is refused).
    Ties keep the order a stable descending sort gives. A mean of no rows is nan (scikit-uplift answers nan with
    numpy's warning; this returns nan without one), e.g. when the top rows hold no control row.
    """
    if strategy not in UPLIFT_AT_K_STRATEGIES:
        raise ValueError(f"strategy must be one of {list(UPLIFT_AT_K_STRATEGIES)}; got {strategy!r}")
    y, uplift, treatment = _checked(y, uplift, treatment)
    n = len(y)
    is_int = isinstance(k, int | np.integer) and not isinstance(k, bool)
    if is_int and not 0 < k < n:
        raise ValueError(f"k={k} rows must be positive and smaller than the number of rows {n}")
    if not is_int and not (isinstance(k, float | np.floating) and 0 < k < 1):
        raise ValueError(f"k must be a float in (0, 1) or an int number of rows; got {k!r}")
    order = np.argsort(uplift, kind="mergesort")[::-1]
    y_sorted, t_sorted = y[order], treatment[order]
    if strategy == "overall":
        size = int(k) if is_int else int(n * k)
        top_y, top_t = y_sorted[:size], t_sorted[:size]
        treated, control = top_y[top_t == 1], top_y[top_t == 0]
    else:
        n_treated, n_control = int((treatment == 1).sum()), int((treatment == 0).sum())
        take_t, take_c = (int(k), int(k)) if is_int else (int(n_treated * k), int(n_control * k))
        for group, take, size in (("treatment", take_t, n_treated), ("control", take_c, n_control)):
            if take > size:
                raise ValueError(f"k={k} asks for the first {take} rows of the {group} group, which has {size}")
        treated, control = y_sorted[t_sorted == 1][:take_t], y_sorted[t_sorted == 0][:take_c]
    if len(treated) == 0 or len(control) == 0:
        return float("nan")
    return float(treated.mean() - control.mean())


def multi_action_qini(
    y: np.ndarray,
    actions: np.ndarray,
    uplift: np.ndarray,
    treatments: Sequence[str],
    control: str,
    sample_weight: np.ndarray | None = None,
) -> dict[str, float]:
    """Qini coefficient per treatment on its rows and the control rows; plus their unweighted mean under "mean"."""
    return _per_action(qini_coefficient, y, actions, uplift, treatments, control, sample_weight)


def multi_action_auuc(
    y: np.ndarray,
    actions: np.ndarray,
    uplift: np.ndarray,
    treatments: Sequence[str],
    control: str,
    sample_weight: np.ndarray | None = None,
) -> dict[str, float]:
    """AUUC (`uplift_auc_score`) per treatment on its rows and the control rows; plus their unweighted mean."""
    return _per_action(uplift_auc_score, y, actions, uplift, treatments, control, sample_weight)


def pehe(tau_hat: np.ndarray, tau_true: np.ndarray) -> float | np.ndarray:
    """Precision in estimating heterogeneous effects, √(mean over rows of (τ̂ − τ)²).

    1-D input → float; 2-D (rows × actions) → array with one value per column.
    """
    tau_hat, tau_true = np.asarray(tau_hat, dtype=float), np.asarray(tau_true, dtype=float)
    if tau_hat.shape != tau_true.shape or tau_hat.ndim not in (1, 2) or len(tau_hat) == 0:
        raise ValueError(
            f"tau_hat and tau_true must be equal non-empty 1-D or 2-D arrays; got {tau_hat.shape}, {tau_true.shape}"
        )
    value = np.sqrt(np.mean((tau_hat - tau_true) ** 2, axis=0))
    return float(value) if tau_hat.ndim == 1 else value


class PolicyValue(NamedTuple):
    """An off-policy estimate of a policy's mean outcome per row, with its normal-approximation standard error."""

    value: float
    se: float

    def interval(self, alpha: float = 0.05) -> tuple[float, float]:
        """Two-sided normal interval value ± z_{1−α/2}·se."""
        half = float(norm.ppf(1 - alpha / 2)) * self.se
        return self.value - half, self.value + half


def policy_value_ips(
    y: np.ndarray, logged_action: np.ndarray, propensity: np.ndarray, target_action: np.ndarray | str
) -> PolicyValue:
    """Inverse propensity scoring: V = (1/n) Σ 1[a_i = π_i]·y_i/p_i, se = sd(terms, ddof=1)/√n.

    `target_action` is π(x_i) per row (or one action for all rows); actions are compared as strings.
    """
    y, weight = _off_policy(y, logged_action, propensity, target_action)
    return _mean_with_se(weight * y)


def policy_value_snips(
    y: np.ndarray, logged_action: np.ndarray, propensity: np.ndarray, target_action: np.ndarray | str
) -> PolicyValue:
    """Self-normalised IPS: V = Σ w_i·y_i / Σ w_i, w_i = 1[a_i = π_i]/p_i.

    se by the delta method: √(n/(n − 1) · Σ w_i²·(y_i − V)²) / Σ w_i (the ddof-1 sd of w_i·(y_i − V)/mean(w), /√n).
    """
    y, weight = _off_policy(y, logged_action, propensity, target_action)
    total = weight.sum()
    if total == 0:
        raise ValueError("no logged action matches the target policy; SNIPS is undefined")
    value = float((weight * y).sum() / total)
    n = len(y)
    se = float(np.sqrt(np.sum((weight * (y - value)) ** 2) * n / (n - 1)) / total)
    return PolicyValue(value, se)


def policy_value_dr(
    y: np.ndarray,
    logged_action: np.ndarray,
    propensity: np.ndarray,
    target_action: np.ndarray | str,
    mu_logged: np.ndarray,
    mu_target: np.ndarray,
) -> PolicyValue:
    """Doubly robust: V = (1/n) Σ [μ̂_target,i + 1[a_i = π_i]·(y_i − μ̂_logged,i)/p_i], se = sd(terms, ddof=1)/√n.

    `mu_logged` = μ̂(x_i, a_i), the outcome model's prediction for the logged action; `mu_target` = μ̂(x_i, π(x_i)).
    """
    y, weight = _off_policy(y, logged_action, propensity, target_action)
    mu_logged, mu_target = np.asarray(mu_logged, dtype=float), np.asarray(mu_target, dtype=float)
    if mu_logged.shape != y.shape or mu_target.shape != y.shape:
        raise ValueError(f"mu_logged and mu_target must have shape {y.shape}; got {mu_logged.shape}, {mu_target.shape}")
    if not (np.isfinite(mu_logged).all() and np.isfinite(mu_target).all()):
        raise ValueError("mu_logged and mu_target must be finite")
    return _mean_with_se(mu_target + weight * (y - mu_logged))


def _normalised_area(
    curve: tuple[np.ndarray, np.ndarray], perfect_curve: tuple[np.ndarray, np.ndarray], undefined: str
) -> float:
    """(A_model − A_random) / (A_perfect − A_random), the random line joining (0, 0) to the perfect curve's end."""
    (x, values), (xp, perfect_values) = curve, perfect_curve
    random = np.trapezoid([0.0, perfect_values[-1]], [0.0, xp[-1]])
    perfect = np.trapezoid(perfect_values, xp) - random
    if perfect == 0:
        raise ValueError(undefined)
    return float((np.trapezoid(values, x) - random) / perfect)


def _per_action(
    score, y, actions, uplift, treatments: Sequence[str], control: str, sample_weight
) -> dict[str, float]:
    actions = np.asarray(actions).astype(str)
    weight = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
    scores: dict[str, float] = {}
    for j, action in enumerate(treatments):
        rows = (actions == action) | (actions == control)
        w = None if weight is None else weight[rows]
        scores[action] = score(y[rows], uplift[rows, j], (actions[rows] == action).astype(int), w)
    scores["mean"] = float(np.mean(list(scores.values())))
    return scores


def _cumulative(
    y: np.ndarray, uplift: np.ndarray, treatment: np.ndarray, sample_weight: np.ndarray | None
) -> tuple[np.ndarray, ...]:
    """(N, N_t, N_c, Y_t, Y_c) at each distinct-threshold cut of the descending ranking (weighted if weights)."""
    y, uplift, treatment = _checked(y, uplift, treatment)
    w = None if sample_weight is None else checked_sample_weight(sample_weight, len(y))
    order = np.argsort(uplift, kind="mergesort")[::-1]
    y, uplift, treatment = y[order], uplift[order], treatment[order]
    cut = np.r_[np.where(np.diff(uplift))[0], uplift.size - 1]
    if w is None:
        n_t = np.cumsum(treatment)[cut]
        y_t = np.cumsum(y * treatment)[cut]
        n_all = cut + 1
        y_all = np.cumsum(y)[cut]
    else:
        w = w[order]
        n_t = np.cumsum(w * treatment)[cut]
        y_t = np.cumsum(w * y * treatment)[cut]
        n_all = np.cumsum(w)[cut]
        y_all = np.cumsum(w * y)[cut]
    return n_all, n_t, n_all - n_t, y_t, y_all - y_t


def _checked(y: np.ndarray, uplift: np.ndarray, treatment: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, uplift, treatment = np.asarray(y, float), np.asarray(uplift, float), np.asarray(treatment)
    if not (len(y) == len(uplift) == len(treatment)):
        raise ValueError(f"y, uplift and treatment lengths differ: {len(y)}, {len(uplift)}, {len(treatment)}")
    if len(y) == 0:
        raise ValueError("uplift metrics need at least one row")
    if not np.isin(treatment, (0, 1)).all():
        raise ValueError("treatment must be 0 (control) or 1 (treated)")
    return y, uplift, treatment.astype(int)


def checked_sample_weight(sample_weight: np.ndarray, n: int) -> np.ndarray:
    """Sample weights as floats, one finite non-negative value per row (a ValueError says what is wrong)."""
    w = np.asarray(sample_weight, dtype=float)
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have one value per row ({n}); got shape {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("sample_weight must be finite and >= 0")
    return w


def _off_policy(y, logged_action, propensity, target_action) -> tuple[np.ndarray, np.ndarray]:
    """(y, w) with w_i = 1[logged_i = target_i]/p_i, after checking lengths and propensities."""
    y = np.asarray(y, dtype=float)
    logged = np.asarray(logged_action).astype(str)
    propensity = np.asarray(propensity, dtype=float)
    if y.ndim != 1 or logged.shape != y.shape or propensity.shape != y.shape:
        raise ValueError(
            f"y, logged_action and propensity must be 1-D of equal length; got {y.shape}, {logged.shape}, "
            f"{propensity.shape}"
        )
    if len(y) < 2:
        raise ValueError("off-policy estimates need at least two rows")
    target = np.asarray(target_action).astype(str)
    if target.ndim == 0:
        target = np.full(y.shape, target.item())
    if target.shape != y.shape:
        raise ValueError(f"target_action must be one action or one per row ({len(y)}); got shape {target.shape}")
    if not np.isfinite(y).all():
        raise ValueError("y must be finite")
    if not np.isfinite(propensity).all() or (propensity <= 0).any() or (propensity > 1).any():
        raise ValueError("propensity must be the logged probability of the logged action, in (0, 1]")
    return y, (logged == target) / propensity


def _mean_with_se(terms: np.ndarray) -> PolicyValue:
    return PolicyValue(float(terms.mean()), float(terms.std(ddof=1) / np.sqrt(len(terms))))
