"""T-learner: one outcome model per arm; uplift of action a is μ_a(x) − μ_control(x)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from training.learners.base import ArrayLike, MultiArmUpliftLearner, fit_base, ipw, predict_base


class TLearner(MultiArmUpliftLearner):
    """One XGBoost outcome model per arm, each fitted on that arm's rows with inverse-propensity weights.

    Fitted attribute beyond the base ones: `models_` (arm → model).
    """

    def fit(
        self,
        X: pd.DataFrame | np.ndarray,
        treatment: Sequence[str] | np.ndarray,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        propensity: ArrayLike | None = None,
    ) -> "TLearner":
        """Fit one outcome model per arm; returns self."""
        data = self._validate_fit(X, treatment, y, sample_weight, propensity)
        weight = ipw(data)
        self.models_ = {}
        for arm in self.arms_:
            rows = data.treatment == arm
            self.models_[arm] = fit_base(self._regressor(), data.X[rows], data.y[rows], weight[rows])
        return self

    def predict_outcomes(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Expected outcome μ_a(x) per arm, shape (n, 1 + K), columns in `arms_` order (control first)."""
        features = self._validate_predict(X)
        return np.column_stack([predict_base(self.models_[arm], features) for arm in self.arms_])

    def predict_uplift(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Uplift μ_a(x) − μ_control(x) per treatment, shape (n, K), columns in `treatments_` order."""
        outcomes = self.predict_outcomes(X)
        return outcomes[:, 1:] - outcomes[:, :1]
