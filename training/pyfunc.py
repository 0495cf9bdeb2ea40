"""The MLflow pyfunc that wraps a fitted uplift learner with its feature list and action catalogue."""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from training.calibration import UpliftRecalibrator
from training.learners import MultiArmUpliftLearner


class UpliftModel(mlflow.pyfunc.PythonModel):
    """pyfunc: DataFrame of features (columns `feature_names`) → DataFrame of uplift per treatment action.

    Serving unwraps it (`unwrap_python_model()`) and calls `uplift(matrix)` to skip pandas on the hot path.
    """

    def __init__(
        self,
        learner: MultiArmUpliftLearner,
        feature_names: list[str],
        action_costs: dict[str, float],
        recalibrator: UpliftRecalibrator | None = None,
        uplift_se: dict[str, float] | None = None,
    ):
        self.learner = learner
        self.feature_names = list(feature_names)
        self.action_costs = dict(action_costs)
        self.recalibrator = recalibrator
        # Standard error of each action's average uplift on the holdout (AIPW): the `s` of the serving policy's
        # optimistic score u = μ + γ·s. Rarely logged actions have a larger s, so γ > 0 explores them more.
        self.uplift_se = dict(uplift_se or {})

    @property
    def treatments(self) -> list[str]:
        """Treatment actions in the column order of `uplift`."""
        return list(self.learner.treatments_)

    @property
    def control(self) -> str:
        """The baseline action (uplift 0 by definition)."""
        return self.learner.control

    def uplift(self, features: np.ndarray) -> np.ndarray:
        """Predicted (and recalibrated, if fitted with a recalibrator) uplift, shape (n, K), for a float matrix whose
        columns follow `feature_names`."""
        uplift = self.learner.predict_uplift(features)
        return uplift if self.recalibrator is None else self.recalibrator.transform(uplift)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Uplift per treatment for each row of `model_input`."""
        missing = [c for c in self.feature_names if c not in model_input.columns]
        if missing:
            raise ValueError(f"model input lacks features {missing}")
        return pd.DataFrame(self.uplift(model_input[self.feature_names].to_numpy(np.float32)), columns=self.treatments)
