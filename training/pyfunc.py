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
        uplift_sd_model: Any = None,
    ):
        self.learner = learner
        self.feature_names = list(feature_names)
        self.action_costs = dict(action_costs)
        self.recalibrator = recalibrator
        # Standard error of each action's average uplift on the holdout (AIPW): the `s` of the serving policy's
        # optimistic score u = μ + γ·s. Rarely logged actions have a larger s, so γ > 0 explores them more.
        self.uplift_se = dict(uplift_se or {})
        # Per-user uncertainty (training.train.fit_uplift_sd_model): an XGBoost regressor of log σ on [features,
        # one-hot(treatment)], σ the spread of the uplift over bootstrap refits; None: `uplift_se` for every user.
        self.uplift_sd_model = uplift_sd_model

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

    def uplift_sd(self, features: np.ndarray) -> np.ndarray:
        """This user's uncertainty σ of each treatment's uplift, shape (n, K), `uplift` units: exp of the distilled
        model's log σ when the model has one, else the holdout standard error of the action's average uplift."""
        features = np.asarray(features, np.float32)
        treatments = self.treatments
        sd_model = getattr(self, "uplift_sd_model", None)  # models pickled before it existed have none
        if sd_model is None:
            se = np.array([float(self.uplift_se.get(a, 0.0)) for a in treatments])
            return np.tile(se, (len(features), 1))
        rows = one_hot_rows(features, len(treatments))
        log_sd = np.asarray(sd_model.get_booster().inplace_predict(rows), np.float32).reshape(len(features), -1)
        return np.exp(log_sd.astype(np.float64))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Uplift per treatment for each row of `model_input`."""
        missing = [c for c in self.feature_names if c not in model_input.columns]
        if missing:
            raise ValueError(f"model input lacks features {missing}")
        return pd.DataFrame(self.uplift(model_input[self.feature_names].to_numpy(np.float32)), columns=self.treatments)


def one_hot_rows(features: np.ndarray, arms: int) -> np.ndarray:
    """Row i·arms + a = [features_i, one-hot(a)] (float32): the uncertainty model's input, laid out as the compiled
    scorer's `Forest.one_hot_margins` builds it."""
    features = np.asarray(features, np.float32)
    rows = np.zeros((len(features) * arms, features.shape[1] + arms), np.float32)
    rows[:, : features.shape[1]] = np.repeat(features, arms, axis=0)
    rows[np.arange(len(rows)), features.shape[1] + np.tile(np.arange(arms), len(features))] = 1.0
    return rows
