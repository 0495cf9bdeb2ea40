"""R-learner (Nie & Wager, 2021): minimise the cross-fitted R-loss, one effect model per treatment.

For treatment a, on the rows logged with a or with the control arm, with t = 1[T = a]:

    τ_a = argmin_τ Σ w·((y − m(x)) − (t − e(x))·τ(x))²

where m(x) = E[y | x] and e(x) = P(T = a | x, T ∈ {a, control}) are nuisance models cross-fitted over `n_folds`
folds (each row's m and e come from models that did not see it). The minimisation is a weighted regression of the
pseudo-outcome (y − m)/(t − e) with weights w·(t − e)².

e(x): with one treatment and logged propensities it is exact (the logged probability of the logged action, p for a
treated row and 1 − p for a control row). With several treatments the log holds only the probability of the action
actually taken, which does not give P(a | a or control), so e is a cross-fitted classifier of a vs control (the
base model with a logistic objective). e is clipped to [`propensity_clip`, 1 − `propensity_clip`]: the pseudo-outcome
divides by t − e.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from training.learners.base import ArrayLike, FitData, MultiArmUpliftLearner, check_n_folds, fit_base, predict_base


class RLearner(MultiArmUpliftLearner):
    """R-learner over K treatments and the control arm (see the module docstring).

    Fitted attributes beyond the base ones: `effect_models_` (treatment → τ_a), `propensity_source_` ("logged" or
    "classifier").
    """

    def __init__(
        self,
        control: str = "no_action",
        outcome: str = "revenue",
        objective: str | None = None,
        n_estimators: int = 200,
        max_depth: int = 2,
        learning_rate: float = 0.05,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        min_child_weight: float = 50.0,
        reg_lambda: float = 1.0,
        min_rows_per_arm: int = 50,
        n_jobs: int = 2,
        random_state: int = 0,
        base_model: str = "xgboost",
        thin_arms: str = "drop",
        n_folds: int = 2,
        propensity_clip: float = 0.02,
    ):
        super().__init__(
            control=control,
            outcome=outcome,
            objective=objective,
            n_estimators=n_estimators,
            max_depth=max_depth,
            learning_rate=learning_rate,
            subsample=subsample,
            colsample_bytree=colsample_bytree,
            min_child_weight=min_child_weight,
            reg_lambda=reg_lambda,
            min_rows_per_arm=min_rows_per_arm,
            n_jobs=n_jobs,
            random_state=random_state,
            base_model=base_model,
            thin_arms=thin_arms,
        )
        self.n_folds = n_folds
        self.propensity_clip = propensity_clip

    def fit(
        self,
        X: pd.DataFrame | np.ndarray,
        treatment: Sequence[str] | np.ndarray,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        propensity: ArrayLike | None = None,
    ) -> "RLearner":
        """Cross-fit m and e per treatment, then fit τ_a on the R-loss; returns self."""
        check_n_folds(self.n_folds)
        if not 0 < self.propensity_clip < 0.5:
            raise ValueError(f"propensity_clip must be in (0, 0.5); got {self.propensity_clip}")
        data = self._validate_fit(X, treatment, y, sample_weight, propensity)
        exact = data.propensity is not None and len(self.treatments_) == 1
        self.propensity_source_ = "logged" if exact else "classifier"
        fold = np.random.default_rng(self.random_state).permutation(len(data.y)) % self.n_folds
        self.effect_models_ = {}
        for arm in self.treatments_:
            rows = np.flatnonzero(np.isin(data.treatment, [arm, self.control]))
            treated = (data.treatment[rows] == arm).astype(float)
            m, e = self._nuisances(data, rows, treated, fold[rows], exact)
            e = np.clip(e, self.propensity_clip, 1.0 - self.propensity_clip)
            residual_t = treated - e
            self.effect_models_[arm] = fit_base(
                self._regressor("reg:squarederror"),
                data.X[rows],
                (data.y[rows] - m) / residual_t,
                data.weight[rows] * residual_t**2,
            )
        return self

    def _nuisances(
        self, data: FitData, rows: np.ndarray, treated: np.ndarray, fold: np.ndarray, exact: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Out-of-fold m(x) and e(x) for `rows` (e from the log when `exact`)."""
        X, y, w = data.X[rows], data.y[rows], data.weight[rows]
        m, e = np.empty(len(rows)), np.empty(len(rows))
        for k in range(self.n_folds):
            out, inside = fold == k, fold != k
            if not out.any():
                continue
            m[out] = predict_base(fit_base(self._regressor(), X[inside], y[inside], w[inside]), X[out])
            if not exact:
                if np.unique(treated[inside]).size < 2:
                    raise ValueError("a cross-fitting fold holds only one of the two arms; log more rows of both")
                classifier = fit_base(self._regressor("binary:logistic"), X[inside], treated[inside], w[inside])
                e[out] = predict_base(classifier, X[out])
        if exact:
            assert data.propensity is not None
            p = data.propensity[rows]
            e = np.where(treated == 1.0, p, 1.0 - p)
        return m, e

    def predict_uplift(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """τ_a(x) per treatment, shape (n, K), columns in `treatments_` order."""
        features = self._validate_predict(X)
        return np.column_stack([predict_base(self.effect_models_[arm], features) for arm in self.treatments_])
