"""DR-learner (Kennedy, 2023): regress cross-fitted AIPW pseudo-outcomes on the features, one model per treatment."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from training.learners.ate import aipw_pseudo_outcomes
from training.learners.base import (
    ArrayLike,
    MultiArmUpliftLearner,
    arm_folds,
    check_n_folds,
    fit_base,
    ipw,
    predict_base,
)


class DRLearner(MultiArmUpliftLearner):
    """Doubly robust learner over K treatments and the control arm; needs the logged propensities.

    1. Cross-fitting: rows are split into `n_folds` folds (within each arm, shuffled by `random_state`, so every
       fold holds a share of every arm). For each fold, outcome models μ_arm (one per arm, inverse-propensity
       weights, outcome objective) are fitted on the other folds and predict the fold's rows.
    2. Pseudo-outcome of treatment a on every row, with p the LOGGED propensity of the row's logged action:
       ψ_a = μ_a(x) − μ_0(x) + 1[T=a]·(y − μ_a(x))/p − 1[T=control]·(y − μ_0(x))/p.
       1/p is capped at `max_weight` (default 50, i.e. p < 2 %; None: no cap): a handful of tiny propensities would
       otherwise dominate the regression; the cap trades a little bias on those rows for variance.
    3. τ_a(x): XGBoost (reg:squarederror) of ψ_a on x over all rows, with the sample weights.

    Fitted attributes beyond the base ones: `outcome_models_` (list over folds of arm → μ_arm, fold k's models
    fitted without fold k), `effect_models_` (treatment → τ_a), `n_clipped_` (rows whose 1/p exceeded
    `max_weight`).
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
        max_weight: float | None = 50.0,
        n_folds: int = 2,
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
        self.max_weight = max_weight
        self.n_folds = n_folds

    def fit(
        self,
        X: pd.DataFrame | np.ndarray,
        treatment: Sequence[str] | np.ndarray,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        propensity: ArrayLike | None = None,
    ) -> "DRLearner":
        """Cross-fit the outcome models, build the pseudo-outcomes, fit one effect model per treatment; returns self."""
        if propensity is None:
            raise ValueError(
                "DRLearner needs propensity: the logged probability of each row's logged action (its AIPW "
                "pseudo-outcomes divide by it)"
            )
        if self.max_weight is not None and not self.max_weight >= 1:
            raise ValueError(f"max_weight caps 1/propensity (which is >= 1), so it must be >= 1; got {self.max_weight}")
        check_n_folds(self.n_folds)
        data = self._validate_fit(X, treatment, y, sample_weight, propensity)
        fold = arm_folds(data.treatment, self.arms_, self.n_folds, self.random_state)
        weight = ipw(data)
        outcomes = np.empty((len(data.y), len(self.arms_)))
        self.outcome_models_ = []
        for k in range(self.n_folds):
            held_out = fold == k
            models = {}
            for j, arm in enumerate(self.arms_):
                rows = ~held_out & (data.treatment == arm)
                models[arm] = fit_base(self._regressor(), data.X[rows], data.y[rows], weight[rows])
                outcomes[held_out, j] = predict_base(models[arm], data.X[held_out])
            self.outcome_models_.append(models)
        assert data.propensity is not None  # checked above
        psi, clipped = aipw_pseudo_outcomes(
            outcomes, data.treatment, data.y, data.propensity, self.arms_, self.max_weight
        )
        self.n_clipped_ = int(clipped.sum())
        self.effect_models_ = {
            arm: fit_base(self._regressor("reg:squarederror"), data.X, psi[:, j], data.weight)
            for j, arm in enumerate(self.treatments_)
        }
        return self

    def predict_outcomes(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Mean over folds of the cross-fitted μ_arm(x), shape (n, 1 + K), columns in `arms_` order."""
        features = self._validate_predict(X)
        return np.mean(
            [
                np.column_stack([predict_base(models[arm], features) for arm in self.arms_])
                for models in self.outcome_models_
            ],
            axis=0,
        )

    def predict_uplift(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """τ_a(x) per treatment, shape (n, K), columns in `treatments_` order."""
        features = self._validate_predict(X)
        return np.column_stack([predict_base(self.effect_models_[arm], features) for arm in self.treatments_])
