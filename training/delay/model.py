"""Delayed-feedback ("cure") models fitted by censored maximum likelihood (Chapelle 2014, KDD).

Most exposures never convert, so the delay distribution alone is the wrong model. Each exposure i converts
eventually with probability p; if it does, the delay D ~ F (a family of `families.py`). Only purchases with
D < W (the attribution window) are ever attributed. Observed per exposure, at the time the data are read:

    converted, delay d_i:               L_i = p · f(d_i)
    not converted, elapsed time c_i:    L_i = 1 − p + p·S(min(c_i, W)) = 1 − p·F(min(c_i, W))

(a row whose window has closed without a purchase is censored at W). (p, φ) maximise Σ log L_i. The exponential
family is fitted by EM (closed-form M-step: p = (n_conv + Σ w_i)/n, λ = n_conv / (Σ d_i + Σ w_i·c_i) with
w_i = p·S(c_i) / (1 − p·F(c_i)) the posterior that a pending row still converts), then polished with L-BFGS-B
on the analytic gradient; the other families start from that exponential fit and use L-BFGS-B.

Only p·F(t) for t ≤ W is identified from attributed data; p alone (eventual conversion, past the window) rests on
the family's tail. What the interim metrics need is identified: P(convert within W) = p·F(W) and, for a pending
row, P(converts within W | not by c) = p·(F(W) − F(c)) / (1 − p·F(c)).

Model choice (`DelayModelSelector`): AIC = 2·(1 + n_φ) − 2·log L (default), or the held-out log-likelihood of a
random split. Per group (`GroupedDelayModel`): a group with at least `min_conversions` conversions gets its own
choice of family and fit; the others share the pooled delay distribution F (fitted on all rows) with their own p
(conversion rates differ by action far more than delay shapes need data to show; pool="all" pools p too). What
each group got is recorded in `groups_`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit, log_expit, logit
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError

from training.delay.families import DEFAULT_KNOTS_HOURS, FAMILIES, DelayFamily, make_family

logger = logging.getLogger(__name__)

DEFAULT_WINDOW_HOURS = 72.0
P_LOGIT_BOUNDS = (-20.0, 20.0)
EM_MAX_ITER = 2_000
EM_TOL = 1e-10


def check_survival_data(
    elapsed_hours: Any, converted: Any, window_hours: float
) -> tuple[np.ndarray, np.ndarray]:
    """Validated float elapsed/delay hours and boolean converted arrays of equal length."""
    t = np.asarray(elapsed_hours, dtype=np.float64).ravel()
    c = np.asarray(converted).ravel()
    if len(t) != len(c):
        raise ValueError(f"elapsed_hours and converted differ in length ({len(t)} vs {len(c)})")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError("elapsed_hours must be finite and >= 0 (delay for converted rows, time since exposure else)")
    if c.dtype != bool:
        if not np.all(np.isin(c, (0, 1))):
            raise ValueError("converted must be boolean or 0/1")
        c = c.astype(bool)
    late = c & (t >= window_hours)
    if late.any():
        raise ValueError(
            f"{int(late.sum())} converted rows have a delay >= the {window_hours:g} h window; purchases after the "
            "window are not attributed: mark those rows converted=False (censored at the window)"
        )
    return t, c


class DelayModel(BaseEstimator):
    """Cure model P(convert) = p, delay | convert ~ `family`, fitted by censored maximum likelihood."""

    def __init__(
        self,
        family: str = "exponential",
        window_hours: float = DEFAULT_WINDOW_HOURS,
        knots_hours: Sequence[float] = DEFAULT_KNOTS_HOURS,
        max_iter: int = 500,
    ) -> None:
        """Store the settings as given (scikit-learn convention); see the module docstring for the model."""
        self.family = family
        self.window_hours = window_hours
        self.knots_hours = knots_hours
        self.max_iter = max_iter

    def fit(self, elapsed_hours: Any, converted: Any) -> DelayModel:
        """Fit p and F: elapsed_hours is the delay where converted, else the time since exposure (censored at W)."""
        if not self.window_hours > 0:
            raise ValueError(f"window_hours must be > 0, got {self.window_hours!r}")
        t, conv = check_survival_data(elapsed_hours, converted, self.window_hours)
        n_conv = int(conv.sum())
        if n_conv == 0:
            raise ValueError(
                f"no conversions among {len(t)} exposures: a delay distribution cannot be fitted; use more history "
                "or pool groups (GroupedDelayModel(min_conversions=...) falls back to the pooled fit)"
            )
        family = make_family(self.family, self.knots_hours)
        delays, pending = t[conv], np.minimum(t[~conv], self.window_hours)
        p0, rate0, n_em = _exponential_em(delays, pending, len(t))
        theta0 = np.concatenate([[np.clip(logit(p0), *P_LOGIT_BOUNDS)], family.initial(rate0)])
        objective = _NegLogLik(family, delays, pending)
        result = minimize(
            objective, theta0, jac=True, method="L-BFGS-B", bounds=[P_LOGIT_BOUNDS, *family.bounds()],
            options={"maxiter": self.max_iter},
        )
        if not result.success:
            logger.warning("delay model %s did not converge: %s", self.family, result.message)
        self.distribution_: DelayFamily = family
        self.theta_ = np.asarray(result.x, dtype=np.float64)
        self.p_ = float(expit(self.theta_[0]))
        self.params_ = {"p": self.p_, **family.named(self.theta_[1:])}
        self.loglik_ = -float(result.fun) * objective.scale
        self.n_params_ = len(self.theta_)
        self.aic_ = 2.0 * self.n_params_ - 2.0 * self.loglik_
        self.n_exposures_, self.n_conversions_ = len(t), n_conv
        self.converged_ = bool(result.success)
        self.n_iter_ = int(result.nit) + n_em
        self.window_rate_ = self.p_ * float(self.cdf(self.window_hours))
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "theta_"):
            raise NotFittedError("this DelayModel is not fitted yet: call fit(elapsed_hours, converted) first")

    def cdf(self, hours: Any) -> np.ndarray:
        """F(t) = P(D <= t | converts eventually)."""
        self._check_fitted()
        t = np.asarray(hours, dtype=np.float64)
        values, _ = self.distribution_.cdf(self.theta_[1:], self.distribution_.prepare(t.ravel()))
        return values.reshape(t.shape)

    def conversion_within(self, hours: Any) -> np.ndarray:
        """p·F(t): probability that an exposure converts within t hours."""
        return self.p_ * self.cdf(hours)

    def pending_probability(self, elapsed_hours: Any, groups: Any = None) -> np.ndarray:
        """P(converts within W | not converted after c hours) = p·(F(W) − F(c)) / (1 − p·F(c)); 0 once c >= W."""
        c = np.asarray(elapsed_hours, dtype=np.float64)
        if np.any(c < 0):
            raise ValueError("elapsed_hours must be >= 0")
        w = self.window_hours
        f_c = self.cdf(np.minimum(c, w))
        q = self.p_ * (float(self.cdf(w)) - f_c) / (1.0 - self.p_ * f_c)
        return np.where(c >= w, 0.0, np.clip(q, 0.0, 1.0))

    def with_own_p(self, elapsed_hours: Any, converted: Any) -> DelayModel:
        """A copy with this delay distribution F kept and p refitted by censored MLE on these rows (F fixed)."""
        self._check_fitted()
        t, conv = check_survival_data(elapsed_hours, converted, self.window_hours)
        objective = _NegLogLik(self.distribution_, t[conv], np.minimum(t[~conv], self.window_hours))
        phi = self.theta_[1:]
        result = minimize_scalar(
            lambda alpha: objective(np.concatenate([[alpha], phi]))[0], bounds=P_LOGIT_BOUNDS, method="bounded",
            options={"xatol": 1e-10},
        )
        copy = clone(self)
        copy.__dict__.update({k: v for k, v in self.__dict__.items() if k.endswith("_")})
        copy.theta_ = np.concatenate([[float(result.x)], phi])
        copy.p_ = float(expit(result.x))
        copy.params_ = {**self.params_, "p": copy.p_}
        copy.loglik_ = -float(result.fun) * objective.scale
        copy.aic_ = 2.0 * copy.n_params_ - 2.0 * copy.loglik_
        copy.n_exposures_, copy.n_conversions_ = len(t), int(conv.sum())
        copy.window_rate_ = copy.p_ * float(copy.cdf(copy.window_hours))
        return copy

    def log_likelihood(self, elapsed_hours: Any, converted: Any) -> float:
        """Σ log L_i of these rows under the fitted model (held-out scoring)."""
        self._check_fitted()
        t, conv = check_survival_data(elapsed_hours, converted, self.window_hours)
        objective = _NegLogLik(self.distribution_, t[conv], np.minimum(t[~conv], self.window_hours))
        return -float(objective(self.theta_)[0]) * objective.scale

    def score(self, elapsed_hours: Any, converted: Any) -> float:
        """Mean log-likelihood per row (higher is better, scikit-learn's convention)."""
        return self.log_likelihood(elapsed_hours, converted) / max(len(np.asarray(converted).ravel()), 1)


class _NegLogLik:
    """−Σ log L_i / n and its gradient in θ = (logit p, φ), for L-BFGS-B."""

    def __init__(self, family: DelayFamily, delays: np.ndarray, pending: np.ndarray) -> None:
        self.family = family
        self.delays = family.prepare(delays)
        self.pending = family.prepare(pending)
        self.n_conv = len(delays)
        self.scale = float(max(len(delays) + len(pending), 1))  # per-row scale keeps the optimiser's steps sane

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        alpha, phi = theta[0], theta[1:]
        p = float(expit(alpha))
        log_f, d_log_f = self.family.log_pdf(phi, self.delays)
        big_f, d_big_f = self.family.cdf(phi, self.pending)
        q = np.maximum(1.0 - p * big_f, 1e-300)
        loglik = self.n_conv * float(log_expit(alpha)) + log_f.sum() + np.log(q).sum()
        grad_alpha = self.n_conv * (1.0 - p) - (p * (1.0 - p) * big_f / q).sum()
        grad_phi = d_log_f.sum(axis=0) - (p * d_big_f / q[:, None]).sum(axis=0)
        grad = np.concatenate([[grad_alpha], grad_phi])
        return -loglik / self.scale, -grad / self.scale


def _exponential_em(delays: np.ndarray, pending: np.ndarray, n: int) -> tuple[float, float, int]:
    """EM for the exponential cure model: (p, λ, iterations), the start of every family's optimisation."""
    n_conv, total_delay = len(delays), float(delays.sum())
    p = n_conv / n
    rate = n_conv / max(total_delay + float(pending.sum()), 1e-12)
    for iteration in range(1, EM_MAX_ITER + 1):
        survival = np.exp(-rate * pending)
        w = p * survival / (1.0 - p + p * survival)  # P(still converts | pending), the E-step
        p_new = min((n_conv + float(w.sum())) / n, 1.0 - 1e-12)
        rate_new = n_conv / max(total_delay + float((w * pending).sum()), 1e-12)
        done = abs(p_new - p) < EM_TOL and abs(rate_new - rate) < EM_TOL * rate
        p, rate = p_new, rate_new
        if done:
            return p, rate, iteration
    return p, rate, EM_MAX_ITER


class DelayModelSelector(BaseEstimator):
    """Fit every family and keep the best by AIC (or held-out log-likelihood); `comparison_` shows the choice."""

    def __init__(
        self,
        families: Sequence[str] = FAMILIES,
        window_hours: float = DEFAULT_WINDOW_HOURS,
        knots_hours: Sequence[float] = DEFAULT_KNOTS_HOURS,
        criterion: str = "aic",
        holdout_fraction: float = 0.3,
        random_state: int = 0,
    ) -> None:
        """Store the settings as given; criterion is "aic" or "holdout"."""
        self.families = families
        self.window_hours = window_hours
        self.knots_hours = knots_hours
        self.criterion = criterion
        self.holdout_fraction = holdout_fraction
        self.random_state = random_state

    def fit(self, elapsed_hours: Any, converted: Any) -> DelayModelSelector:
        """Fit each family on all rows (and, for "holdout", also on a split), choose, keep the chosen fit."""
        if self.criterion not in ("aic", "holdout"):
            raise ValueError(f"criterion must be 'aic' or 'holdout', got {self.criterion!r}")
        if not self.families:
            raise ValueError(f"families must name at least one of {list(FAMILIES)}")
        t, conv = check_survival_data(elapsed_hours, converted, self.window_hours)
        fits = {name: self._model(name).fit(t, conv) for name in self.families}
        rows = [
            {"family": name, "n_params": m.n_params_, "loglik": m.loglik_, "aic": m.aic_, "converged": m.converged_}
            for name, m in fits.items()
        ]
        comparison = pd.DataFrame(rows)
        if self.criterion == "holdout":
            comparison["holdout_loglik"] = self._holdout_logliks(t, conv)
            best = comparison["family"].iloc[int(comparison["holdout_loglik"].to_numpy().argmax())]
        else:
            best = comparison["family"].iloc[int(comparison["aic"].to_numpy().argmin())]
        comparison["chosen"] = comparison["family"] == best
        self.comparison_ = comparison
        self.models_ = fits
        self.family_ = str(best)
        self.model_ = fits[best]
        self.p_ = self.model_.p_
        self.window_rate_ = self.model_.window_rate_
        return self

    def _model(self, family: str) -> DelayModel:
        return DelayModel(family=family, window_hours=self.window_hours, knots_hours=self.knots_hours)

    def _holdout_logliks(self, t: np.ndarray, conv: np.ndarray) -> list[float]:
        """Held-out log-likelihood per family: fit on 1 − holdout_fraction of the rows, score the rest."""
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction!r}")
        test = np.random.default_rng(self.random_state).random(len(t)) < self.holdout_fraction
        return [self._model(name).fit(t[~test], conv[~test]).log_likelihood(t[test], conv[test])
                for name in self.families]

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("this DelayModelSelector is not fitted yet: call fit(elapsed_hours, converted)")

    def cdf(self, hours: Any) -> np.ndarray:
        """F(t) of the chosen family."""
        self._check_fitted()
        return self.model_.cdf(hours)

    def pending_probability(self, elapsed_hours: Any, groups: Any = None) -> np.ndarray:
        """P(converts within W | not converted after c hours) under the chosen family."""
        self._check_fitted()
        return self.model_.pending_probability(elapsed_hours)


class GroupedDelayModel(BaseEstimator):
    """One DelayModelSelector per group (e.g. action) with enough conversions, the pooled fit for the rest."""

    def __init__(
        self,
        families: Sequence[str] = FAMILIES,
        min_conversions: int = 200,
        pool: str = "delay",
        window_hours: float = DEFAULT_WINDOW_HOURS,
        knots_hours: Sequence[float] = DEFAULT_KNOTS_HOURS,
        criterion: str = "aic",
    ) -> None:
        """Store the settings as given. A group with fewer than min_conversions conversions is pooled: with
        pool="delay" it shares the pooled delay distribution F but keeps its own p (MLE with F fixed; the pooled p
        if it has no conversion at all), with pool="all" it uses the pooled model as is."""
        self.families = families
        self.min_conversions = min_conversions
        self.pool = pool
        self.window_hours = window_hours
        self.knots_hours = knots_hours
        self.criterion = criterion

    def _selector(self) -> DelayModelSelector:
        return DelayModelSelector(
            families=self.families, window_hours=self.window_hours, knots_hours=self.knots_hours,
            criterion=self.criterion,
        )

    def fit(self, elapsed_hours: Any, converted: Any, groups: Any = None) -> GroupedDelayModel:
        """Fit the pooled model on all rows, then one per group (own fit, or pooled as `pool` says)."""
        if self.min_conversions < 1:
            raise ValueError(f"min_conversions must be >= 1, got {self.min_conversions!r}")
        if self.pool not in ("delay", "all"):
            raise ValueError(f"pool must be 'delay' (pooled F, own p) or 'all' (pooled model), got {self.pool!r}")
        t, conv = check_survival_data(elapsed_hours, converted, self.window_hours)
        labels = np.full(len(t), "all", dtype=object) if groups is None else np.asarray(groups, dtype=object).ravel()
        if len(labels) != len(t):
            raise ValueError(f"groups and elapsed_hours differ in length ({len(labels)} vs {len(t)})")
        self.pooled_ = self._selector().fit(t, conv)
        self.models_: dict[Any, DelayModelSelector | DelayModel] = {}
        rows = []
        for group in pd.unique(labels) if groups is not None else []:
            mask = labels == group
            n_conv = int(conv[mask].sum())
            model: DelayModelSelector | DelayModel
            if n_conv >= self.min_conversions:
                model = self._selector().fit(t[mask], conv[mask])
                source, family = "own fit", model.family_
            elif self.pool == "delay" and n_conv > 0:
                model = self.pooled_.model_.with_own_p(t[mask], conv[mask])
                source, family = f"pooled F, own p (< {self.min_conversions} conversions)", self.pooled_.family_
            else:
                model = self.pooled_
                source, family = f"pooled (< {self.min_conversions} conversions)", self.pooled_.family_
            if model is not self.pooled_:
                self.models_[group] = model
            rows.append({
                "group": group, "n_exposures": int(mask.sum()), "n_conversions": n_conv, "source": source,
                "family": family, "p": model.p_, "window_rate": model.window_rate_,
            })
        columns = ["group", "n_exposures", "n_conversions", "source", "family", "p", "window_rate"]
        self.groups_ = pd.DataFrame(rows, columns=columns).sort_values("group", kind="stable").reset_index(drop=True)
        return self

    def model_for(self, group: Any) -> DelayModelSelector | DelayModel:
        """The group's model (own fit, or pooled F with own p), else the pooled one (unseen groups too)."""
        if not hasattr(self, "pooled_"):
            raise NotFittedError("this GroupedDelayModel is not fitted yet: call fit(elapsed_hours, converted, groups)")
        return self.models_.get(group, self.pooled_)

    def pending_probability(self, elapsed_hours: Any, groups: Any = None) -> np.ndarray:
        """P(converts within W | not converted after c hours) per row, under its group's model."""
        c = np.asarray(elapsed_hours, dtype=np.float64).ravel()
        if groups is None:
            return self.model_for(None).pending_probability(c)
        labels = np.asarray(groups, dtype=object).ravel()
        if len(labels) != len(c):
            raise ValueError(f"groups and elapsed_hours differ in length ({len(labels)} vs {len(c)})")
        out = np.empty(len(c), dtype=np.float64)
        for group in pd.unique(labels):
            mask = labels == group
            out[mask] = self.model_for(group).pending_probability(c[mask])
        return out
