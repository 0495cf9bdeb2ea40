"""Choose an uplift learner by a cross-fitted causal loss, among meta-learners and base models.

No single meta-learner wins across effect shapes: on Nie & Wager's setups a linear S-learner is best by two orders
of magnitude when the effect is constant (C), a tree DR- or R-learner when the effect is complex (D). The truth τ is
never observed, so the choice is made on a held-out loss whose expectation ranks candidates like their MSE of τ.
Two are offered (`loss`):

    R-loss(τ̂) = mean over held-out rows and their pairs {a, control} of w·((y − m_a(x)) − (t − e_a(x))·τ̂_a(x))²

(Nie & Wager, 2021; the "τ-risk_R" that ranked CATE models best in Schuler et al., 2018), with m_a and e_a fitted on
the other folds (e_a exact from the logged propensity when there is one treatment), and

    DR loss(τ̂) = mean over held-out rows and treatments a of w·(ψ_a − τ̂_a(x))²

with ψ_a the AIPW pseudo-outcome (`training.learners.ate.aipw_pseudo_outcomes`) built from outcome models fitted
on the other folds and the LOGGED propensities. Since E[ψ_a | x] = τ_a(x) when either the outcome models or the
propensities are right (logged propensities are exact), E[loss] = MSE(τ̂) + a term that does not depend on τ̂; the
candidate with the smallest loss is the candidate with the smallest estimated MSE (Saito & Yasui, 2020; the
"DR-loss" of Mahajan et al., 2023). Both are paired: every candidate is scored on the same folds and the same
residuals or ψ. The DR loss is the default: at n = 10,000 it chose within 3 % of the best single learner on every
setup (mean over 5 seeds), the R-loss within 6 %. Both are noisy where candidates are nearly tied: at n = 4,000 on
setup A (ψ divides by propensities down to 0.1) they chose learners 1.4–1.6× worse than the best on average, so the
selector wants thousands of rows per arm. The winner is refitted on all rows.

With `strategy="stack"` the candidates are not chosen but combined: non-negative weights α (normalised to sum 1)
minimise Σ w·(ψ_a − Σ_c α_c·τ̂_{c,a}(x))² over the same out-of-fold predictions (a super learner on the DR loss,
van der Laan et al., 2007), and the candidates with α_c > 0 are refitted on all rows. Where several candidates
are statistically tied (setup A: the linear T-, DR- and R-learners within noise of each other) a single choice is a
coin toss among them; the stack averages them, and where one candidate is clearly best (setup C) it takes nearly
all the weight.

`CausalModelSelector` follows the learners' contract (`fit(X, treatment, y, sample_weight, propensity)`,
`predict_uplift`, `arms_`, `treatments_`), so it can stand wherever a learner does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import nnls
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from training.learners.ate import aipw_pseudo_outcomes
from training.learners.base import (
    ArrayLike,
    MultiArmUpliftLearner,
    arm_folds,
    as_matrix,
    check_n_folds,
    fit_base,
    predict_base,
)
from training.learners.dr_learner import DRLearner
from training.learners.r_learner import RLearner
from training.learners.s_learner import SLearner
from training.learners.t_learner import TLearner
from training.learners.x_learner import XLearner

log = logging.getLogger(__name__)

STRATEGIES = ("select", "stack")
LOSSES = ("dr", "r")

META_LEARNERS: dict[str, type[MultiArmUpliftLearner]] = {
    "s": SLearner,
    "t": TLearner,
    "x": XLearner,
    "r": RLearner,
    "dr": DRLearner,
}


def default_candidates(**params) -> dict[str, MultiArmUpliftLearner]:
    """S, T, X, R and DR learners, each on an XGBoost and on a linear base, with `params` passed to all of them."""
    return {
        f"{name}_{base}": cls(base_model=base, **params)
        for name, cls in META_LEARNERS.items()
        for base in ("xgboost", "linear")
    }


class CausalModelSelector(BaseEstimator):
    """Pick the candidate learner with the smallest cross-fitted causal loss (or stack them), refit on all rows.

    Parameters: `candidates` (name → unfitted learner; None: `default_candidates` with `control`, `outcome`,
    `objective`, `min_rows_per_arm` and `random_state`), `n_folds`, `max_weight` (cap on 1/p in ψ, as in the
    DR-learner; None: uncapped), `loss` ("r" or "dr", see the module docstring), `strategy` ("select" the best or "stack" them, see the module docstring),
    `nuisance` (the learner whose per-arm outcome models build ψ; None: a T-learner on
    XGBoost with the outcome's objective).

    Fitted attributes: `cv_results_` (one row per candidate, best first: loss, its standard error over rows, the
    loss difference to the winner with its paired standard error, fit seconds, error if it failed), `best_name_`,
    `best_estimator_` (with strategy="stack": `weights_`, candidate → α, and `estimators_`, candidate → refitted
    learner, for the candidates with α > 0), and the winner's `arms_`, `treatments_`, `control`, `n_features_in_`, `feature_names_in_`.
    """

    def __init__(
        self,
        candidates: Mapping[str, MultiArmUpliftLearner] | None = None,
        control: str = "no_action",
        outcome: str = "revenue",
        objective: str | None = None,
        min_rows_per_arm: int = 50,
        n_folds: int = 3,
        max_weight: float | None = 50.0,
        loss: str = "dr",
        strategy: str = "select",
        nuisance: MultiArmUpliftLearner | None = None,
        random_state: int = 0,
    ):
        self.candidates = candidates
        self.control = control
        self.outcome = outcome
        self.objective = objective
        self.min_rows_per_arm = min_rows_per_arm
        self.n_folds = n_folds
        self.max_weight = max_weight
        self.strategy = strategy
        self.loss = loss
        self.nuisance = nuisance
        self.random_state = random_state

    def _candidates(self) -> dict[str, MultiArmUpliftLearner]:
        if self.candidates is not None:
            if not self.candidates:
                raise ValueError("candidates is empty: give at least one learner (or None for the defaults)")
            return dict(self.candidates)
        return default_candidates(
            control=self.control, outcome=self.outcome, objective=self.objective,
            min_rows_per_arm=self.min_rows_per_arm, random_state=self.random_state,
        )

    def _nuisance(self) -> MultiArmUpliftLearner:
        if self.nuisance is not None:
            return clone(self.nuisance)
        return TLearner(
            control=self.control, outcome=self.outcome, objective=self.objective,
            min_rows_per_arm=self.min_rows_per_arm, random_state=self.random_state,
        )

    def fit(
        self,
        X: pd.DataFrame | np.ndarray,
        treatment: Sequence[str] | np.ndarray,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        propensity: ArrayLike | None = None,
    ) -> "CausalModelSelector":
        """Score every candidate on the cross-fitted loss, refit the best (or the stack) on all rows; returns self."""
        if propensity is None:
            raise ValueError(
                "CausalModelSelector needs propensity (the logged probability of each row's logged action): the DR "
                "loss's pseudo-outcomes divide by it"
            )
        check_n_folds(self.n_folds)
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {list(STRATEGIES)}; got {self.strategy!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {list(LOSSES)}; got {self.loss!r}")
        if self.strategy == "stack" and self.loss != "dr":
            raise ValueError("strategy='stack' fits weights to the DR pseudo-outcomes: use it with loss='dr'")
        candidates = self._candidates()
        features = as_matrix(X)
        treatment = np.asarray(treatment).astype(str)
        y = np.asarray(y, dtype=float)
        propensity = np.asarray(propensity, dtype=float)
        weight = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        fold = arm_folds(treatment, np.unique(treatment), self.n_folds, self.random_state, every_fold=False)

        names = list(candidates)
        losses = {name: [] for name in names}  # per fold: rows' weighted squared errors
        predictions = {name: [] for name in names}  # per fold: out-of-fold τ̂ (rows × treatments)
        targets, target_weights = [], []
        seconds = dict.fromkeys(names, 0.0)
        errors: dict[str, str] = {}
        for k in range(self.n_folds):
            inside, out = fold != k, fold == k
            if self.loss == "dr":
                arms, keep, target = self._dr_target(features, treatment, y, propensity, weight, inside, out)
                targets.append(target.psi)
                target_weights.append(np.repeat(weight[keep][:, None], target.psi.shape[1], axis=1))
            else:
                arms, keep, target = self._r_target(features, treatment, y, propensity, weight, inside, out)
            for name in names:
                if name in errors:
                    continue
                started = time.perf_counter()
                try:
                    fitted = clone(candidates[name]).fit(
                        features[inside], treatment[inside], y[inside], sample_weight=weight[inside],
                        propensity=propensity[inside],
                    )
                    tau = _aligned(fitted, features[keep], arms[1:])
                except ValueError as exc:  # a candidate that cannot fit these data drops out, with its reason
                    errors[name] = str(exc)
                    log.warning("candidate %s dropped out of model selection: %s", name, exc)
                    continue
                finally:
                    seconds[name] += time.perf_counter() - started
                losses[name].append(target.row_loss(tau))
                predictions[name].append(tau)

        scored = [n for n in names if n not in errors]
        if not scored:
            raise ValueError(f"no candidate could be fitted: {errors}")
        row_loss = {n: np.concatenate(losses[n]) for n in scored}
        mean_loss = {n: float(row_loss[n].mean()) for n in scored}
        self.best_name_ = min(scored, key=lambda n: (mean_loss[n], n))
        best_rows = row_loss[self.best_name_]
        records = []
        for name in names:
            if name in errors:
                records.append({"candidate": name, "loss": np.nan, "loss_se": np.nan, "vs_best": np.nan,
                                "vs_best_se": np.nan, "fit_s": seconds[name], "error": errors[name]})
                continue
            diff = row_loss[name] - best_rows
            records.append({
                "candidate": name,
                "loss": mean_loss[name],
                "loss_se": float(row_loss[name].std(ddof=1) / np.sqrt(len(row_loss[name]))),
                "vs_best": float(diff.mean()),
                "vs_best_se": float(diff.std(ddof=1) / np.sqrt(len(diff))),
                "fit_s": seconds[name],
                "error": "",
            })
        self.cv_results_ = pd.DataFrame.from_records(records).sort_values("loss", na_position="last")
        self.cv_results_ = self.cv_results_.reset_index(drop=True)
        log.info("model selection: %s wins (%s loss %.4g)", self.best_name_, self.loss, mean_loss[self.best_name_])

        def refit(name: str) -> MultiArmUpliftLearner:
            return clone(candidates[name]).fit(X, treatment, y, sample_weight=sample_weight, propensity=propensity)

        self.best_estimator_ = refit(self.best_name_)
        if self.strategy == "stack":
            self.weights_ = _stack_weights(
                {n: np.concatenate(predictions[n]) for n in scored}, np.concatenate(targets),
                np.concatenate(target_weights),
            )
            self.estimators_ = {
                n: self.best_estimator_ if n == self.best_name_ else refit(n) for n, a in self.weights_.items() if a > 0
            }
            log.info("stacked: %s", {n: round(a, 3) for n, a in self.weights_.items() if a > 0})
        best = self.best_estimator_
        self.arms_, self.treatments_ = list(best.arms_), list(best.treatments_)
        self.n_features_in_, self.feature_names_in_ = best.n_features_in_, best.feature_names_in_
        return self

    def _dr_target(self, features, treatment, y, propensity, weight, inside, out):
        """Arms, held-out rows and the DR loss's pseudo-outcomes ψ for one fold (nuisance fitted on `inside`)."""
        nuisance = self._nuisance().fit(
            features[inside], treatment[inside], y[inside], sample_weight=weight[inside],
            propensity=propensity[inside],
        )
        arms = list(nuisance.arms_)
        keep = out & np.isin(treatment, arms)
        psi, _ = aipw_pseudo_outcomes(
            nuisance.predict_outcomes(features[keep]), treatment[keep], y[keep], propensity[keep], arms,
            self.max_weight,
        )
        return arms, keep, _DRTarget(psi, weight[keep])

    def _r_target(self, features, treatment, y, propensity, weight, inside, out):
        """Arms, held-out rows and the R-loss's residuals y − m(x), t − e(x) for one fold, per treatment.

        m_a(x) = E[y | x, T ∈ {a, control}] and e_a(x) = P(T = a | x, T ∈ {a, control}) are fitted on `inside`
        (the nuisance learner's base model; e exact from the logged propensity when there is one treatment).
        """
        nuisance = self._nuisance()
        arms = [self.control, *sorted(a for a in np.unique(treatment[inside]) if a != self.control)]
        keep = out & np.isin(treatment, arms)
        n_keep, exact = int(keep.sum()), len(arms) == 2
        y_res, t_res = np.zeros((n_keep, len(arms) - 1)), np.zeros((n_keep, len(arms) - 1))
        member = np.zeros((n_keep, len(arms) - 1), dtype=bool)
        for j, arm in enumerate(arms[1:]):
            pair = np.isin(treatment, [arm, self.control])
            train_rows, rows = inside & pair, pair[keep]
            treated = (treatment[train_rows] == arm).astype(float)
            m = fit_base(nuisance._regressor(), features[train_rows], y[train_rows], weight[train_rows])
            held = np.flatnonzero(keep)[rows]
            is_arm = (treatment[held] == arm).astype(float)
            if exact:
                e = np.where(is_arm == 1.0, propensity[held], 1.0 - propensity[held])
            else:
                classifier = fit_base(
                    nuisance._regressor("binary:logistic"), features[train_rows], treated, weight[train_rows]
                )
                e = predict_base(classifier, features[held])
            e = np.clip(e, 0.01, 0.99)
            y_res[rows, j] = y[held] - predict_base(m, features[held])
            t_res[rows, j] = is_arm - e
            member[rows, j] = True
        return arms, keep, _RTarget(y_res, t_res, member, weight[keep])

    def predict_uplift(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """The winner's uplift per treatment, shape (n, K), columns in `treatments_` order."""
        check_is_fitted(self, "best_estimator_")
        if self.strategy != "stack":
            return self.best_estimator_.predict_uplift(X)
        features = as_matrix(X)
        return sum(
            self.weights_[name] * _aligned(learner, features, self.treatments_)
            for name, learner in self.estimators_.items()
        )


class _DRTarget:
    """DR loss of one fold: w·(ψ_a − τ̂_a)², averaged over treatments per row."""

    def __init__(self, psi: np.ndarray, weight: np.ndarray):
        self.psi, self.weight = psi, weight

    def row_loss(self, tau: np.ndarray) -> np.ndarray:
        return self.weight * ((self.psi - tau) ** 2).mean(axis=1)


class _RTarget:
    """R-loss of one fold: w·((y − m_a) − (t − e_a)·τ̂_a)² over the treatments whose pair {a, control} holds the row,
    averaged per row (a control row belongs to every pair, a treated row to its own)."""

    def __init__(self, y_res: np.ndarray, t_res: np.ndarray, member: np.ndarray, weight: np.ndarray):
        self.y_res, self.t_res, self.member, self.weight = y_res, t_res, member, weight

    def row_loss(self, tau: np.ndarray) -> np.ndarray:
        squared = np.where(self.member, (self.y_res - self.t_res * tau) ** 2, 0.0)
        return self.weight * squared.sum(axis=1) / np.maximum(self.member.sum(axis=1), 1)


def _stack_weights(predictions: dict[str, np.ndarray], psi: np.ndarray, weight: np.ndarray) -> dict[str, float]:
    """Non-negative weights, normalised to sum 1, of the candidates' τ̂ that best fit ψ in weighted least squares."""
    names = list(predictions)
    scale = np.sqrt(weight.ravel())
    design = np.column_stack([predictions[n].ravel() * scale for n in names])
    alpha, _ = nnls(design, psi.ravel() * scale)
    if alpha.sum() <= 0:  # every candidate points against ψ: fall back to an equal mix rather than all zeros
        alpha = np.ones(len(names))
    alpha = alpha / alpha.sum()
    return {n: float(a) for n, a in zip(names, alpha)}


def _aligned(learner: MultiArmUpliftLearner, features: np.ndarray, treatments: Sequence[str]) -> np.ndarray:
    """A fitted learner's uplift in the column order of `treatments`; a treatment it dropped as thin scores 0."""
    uplift = learner.predict_uplift(features)
    index = {arm: j for j, arm in enumerate(learner.treatments_)}
    out = np.zeros((len(features), len(treatments)))
    for j, arm in enumerate(treatments):
        if arm in index:
            out[:, j] = uplift[:, index[arm]]
    return out
