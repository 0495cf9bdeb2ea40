"""A linear base model with the objectives the learners use, so every meta-learner can run on a linear base.

The meta-learners call their base models through `fit(X, y, sample_weight)` and `predict(X)` (expected outcome on
its own scale). `LinearBase` gives that interface for three objectives:

* ``reg:squarederror`` → ridge regression;
* ``reg:tweedie`` → a Tweedie GLM with log link (power 1.5, as XGBoost's default variance power);
* ``binary:logistic`` → logistic regression (`predict` returns the probability, as XGBoost's `predict` does).

Features are standardised with weighted means and deviations, and missing values (NaN, which XGBoost routes
natively) are imputed by the weighted mean, so a linear base accepts the same matrices as a tree base. Penalties
are small (`alpha` = 1 on standardised features): with thousands of rows the fit is nearly ordinary least squares,
which is what a "linear S-/T-learner" means in the literature.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression, Ridge, TweedieRegressor
from sklearn.utils.validation import check_is_fitted

OBJECTIVES = ("reg:squarederror", "reg:tweedie", "binary:logistic")


class LinearBase(BaseEstimator):
    """Linear model of `objective` on standardised features (see the module docstring)."""

    def __init__(self, objective: str = "reg:squarederror", alpha: float = 1.0):
        self.objective = objective
        self.alpha = alpha

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> "LinearBase":
        """Standardise X, fit the model of `objective`; returns self."""
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"a linear base model supports objectives {list(OBJECTIVES)}; got {self.objective!r} "
                "(use base_model='xgboost' for other objectives)"
            )
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        weight = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        observed = ~np.isnan(X)
        counts = (weight[:, None] * observed).sum(axis=0)
        self.mean_ = np.where(counts > 0, np.nansum(weight[:, None] * np.where(observed, X, 0.0), axis=0)
                              / np.maximum(counts, 1e-300), 0.0)
        centred = np.where(observed, X - self.mean_, 0.0)
        scale = np.sqrt((weight[:, None] * centred**2).sum(axis=0) / max(weight.sum(), 1e-300))
        self.scale_ = np.where(scale > 0, scale, 1.0)  # a constant column stays 0 after centring
        Z = centred / self.scale_
        if self.objective == "reg:squarederror":
            self.model_ = Ridge(alpha=self.alpha).fit(Z, y, sample_weight=weight)
        elif self.objective == "reg:tweedie":
            # sklearn's alpha multiplies the mean deviance's penalty: scale it so it matches Ridge's sum-based one.
            self.model_ = TweedieRegressor(power=1.5, link="log", alpha=self.alpha / len(y), max_iter=1000)
            self.model_.fit(Z, y, sample_weight=weight)
        else:
            if np.unique(y).size < 2:
                raise ValueError("binary:logistic needs both classes in y")
            self.model_ = LogisticRegression(C=1.0 / self.alpha, max_iter=1000).fit(Z, y, sample_weight=weight)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Expected outcome (a probability for binary:logistic), float64."""
        check_is_fitted(self, "model_")
        X = np.asarray(X, dtype=np.float64)
        Z = np.where(np.isnan(X), 0.0, X - self.mean_) / self.scale_
        if self.objective == "binary:logistic":
            return self.model_.predict_proba(Z)[:, 1]
        return self.model_.predict(Z)
