"""S-learner: one outcome model on the features plus the arm; uplift of a is f(x, a) − f(x, control)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from training.learners.base import ArrayLike, MultiArmUpliftLearner, fit_base, ipw, predict_base


class SLearner(MultiArmUpliftLearner):
    """One XGBoost model f(x, arm) on [X, one-hot(arm)], fitted on all rows with inverse-propensity weights.

    The one-hot block has one column per arm in `arms_` order (control first), appended after the features.
    A single model shares what the arms have in common, but with shallow, regularised trees it may leave the arm
    columns out of many splits and shrink the uplift towards 0 (the S-learner's known bias).

    Fitted attribute beyond the base ones: `model_`.
    """

    def fit(
        self,
        X: pd.DataFrame | np.ndarray,
        treatment: Sequence[str] | np.ndarray,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        propensity: ArrayLike | None = None,
    ) -> "SLearner":
        """Fit the single outcome model on every row; returns self."""
        data = self._validate_fit(X, treatment, y, sample_weight, propensity)
        arm_index = pd.Index(self.arms_).get_indexer(data.treatment)
        self.model_ = fit_base(self._regressor(), self._with_arm(data.X, arm_index), data.y, ipw(data))
        return self

    def _with_arm(self, features: np.ndarray, arm_index: np.ndarray | int) -> np.ndarray:
        """[features, one-hot(arm)] as float32, one arm column per entry of arms_."""
        one_hot = np.zeros((len(features), len(self.arms_)), dtype=np.float32)
        one_hot[np.arange(len(features)), arm_index] = 1.0
        return np.hstack([features, one_hot])

    def predict_outcomes(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Expected outcome f(x, arm) per arm, shape (n, 1 + K), columns in `arms_` order (control first)."""
        features = self._validate_predict(X)
        arms = len(self.arms_)
        # One booster call for all (row, arm) pairs: per-call overhead dominates when serving one user.
        stacked = self._with_arm(np.repeat(features, arms, axis=0), np.tile(np.arange(arms), len(features)))
        return predict_base(self.model_, stacked).reshape(len(features), arms)

    def predict_uplift(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Uplift f(x, a) − f(x, control) per treatment, shape (n, K), columns in `treatments_` order."""
        outcomes = self.predict_outcomes(X)
        return outcomes[:, 1:] - outcomes[:, :1]
