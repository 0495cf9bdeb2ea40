"""Multi-action T-learner: one XGBoost outcome model per arm; uplift of action a is μ_a(x) − μ_control(x)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from xgboost import XGBRegressor


class TLearner(BaseEstimator):
    """T-learner over K actions and a control arm, following scikit-learn's estimator contract.

    `fit(X, treatment, y, sample_weight)` trains one regressor per arm on that arm's rows. Pass inverse logged
    propensities as `sample_weight` to re-weight each arm's rows to the whole population when exposure was not
    uniform. Fitted attributes: `arms_` (control first), `treatments_`, `models_`, `feature_names_in_`.
    """

    def __init__(
        self,
        control: str = "no_action",
        objective: str = "reg:tweedie",
        # Shallow, strongly regularised trees: on the simulator's logged data deeper or longer boosting fits the
        # revenue noise and lowers the true policy value (docs/benchmarks.md, "T-learner settings").
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
    ):
        self.control = control
        self.objective = objective
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.reg_lambda = reg_lambda
        self.min_rows_per_arm = min_rows_per_arm
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _base_model(self) -> XGBRegressor:
        return XGBRegressor(
            objective=self.objective,
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            learning_rate=self.learning_rate,
            subsample=self.subsample,
            colsample_bytree=self.colsample_bytree,
            min_child_weight=self.min_child_weight,
            reg_lambda=self.reg_lambda,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
            tree_method="hist",
        )

    def fit(
        self,
        X: pd.DataFrame | np.ndarray,
        treatment: Sequence[str] | np.ndarray,
        y: Sequence[float] | np.ndarray,
        sample_weight: Sequence[float] | np.ndarray | None = None,
    ) -> "TLearner":
        """Fit one outcome model per arm; returns self."""
        features = _as_matrix(X)
        treatment = np.asarray(treatment).astype(str)
        y = np.asarray(y, dtype=float)
        weight = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        if not (len(features) == len(treatment) == len(y) == len(weight)):
            raise ValueError(
                f"X, treatment, y and sample_weight must have equal length; got {len(features)}, "
                f"{len(treatment)}, {len(y)}, {len(weight)}"
            )
        if np.any(weight <= 0) or not np.all(np.isfinite(weight)):
            raise ValueError("sample_weight must be finite and > 0 (use 1/propensity with propensity in (0, 1])")
        arms, counts = np.unique(treatment, return_counts=True)
        if self.control not in arms:
            raise ValueError(f"control arm {self.control!r} has no rows; arms present: {list(arms)}")
        small = {str(a): int(c) for a, c in zip(arms, counts) if c < self.min_rows_per_arm}
        if small:
            raise ValueError(f"arms with fewer than min_rows_per_arm={self.min_rows_per_arm} rows: {small}")
        self.feature_names_in_ = np.asarray(X.columns, dtype=object) if isinstance(X, pd.DataFrame) else None
        self.n_features_in_ = features.shape[1]
        self.treatments_ = [str(a) for a in arms if a != self.control]
        self.arms_ = [self.control, *self.treatments_]
        self.models_ = {}
        for arm in self.arms_:
            rows = treatment == arm
            self.models_[arm] = self._base_model().fit(features[rows], y[rows], sample_weight=weight[rows])
        return self

    def predict_outcomes(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Expected outcome μ_a(x) per arm, shape (n, 1 + K), columns in `arms_` order (control first)."""
        check_is_fitted(self, "models_")
        features = _as_matrix(X)
        if features.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {features.shape[1]} features; the model was fitted with {self.n_features_in_}")
        # inplace_predict skips DMatrix construction: the serving path scores one user at a time.
        return np.column_stack([self.models_[arm].get_booster().inplace_predict(features) for arm in self.arms_])

    def predict_uplift(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Uplift μ_a(x) − μ_control(x) per treatment, shape (n, K), columns in `treatments_` order."""
        outcomes = self.predict_outcomes(X)
        return outcomes[:, 1:] - outcomes[:, :1]


def _as_matrix(X: pd.DataFrame | np.ndarray) -> np.ndarray:
    matrix = X.to_numpy(dtype=np.float32, na_value=np.nan) if isinstance(X, pd.DataFrame) else np.asarray(X, np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"X must be 2-D (rows × features); got shape {matrix.shape}")
    return matrix
