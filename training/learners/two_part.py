"""Two-part learner: revenue as P(purchase | x, arm) × E[amount | purchase, x, arm], both models shared by the arms.

Why: on a small log the revenue label is mostly noise. On the closed loop's bootstrap (10,000 users × 21 days,
~36,000 randomised exposures, 9 % of them with a purchase) the simulator's expected revenue explains 4 % of the
label's variance; fitted to that expected revenue instead of the label, the S-learner's greedy policy would earn
about 0.7 per decision (the feature-limited oracle's level) against 0.29 on the label. Part of the noise is whether
the user bought, and only more data removes it; part is what the purchase was worth (item prices spread widely),
and an arm's revenue mean carries that part undamped: a few dear baskets in one arm make it look like the best
action for everyone. Modelling the amount separately, with trees over all purchases (the arm one of the inputs),
replaces each purchase's amount by its conditional mean in the uplift, so the ranking of actions rests mostly on
who bought (docs/benchmarks.md, "The learner on the loop's data").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from xgboost import XGBRegressor

from training.learners.base import ArrayLike, MultiArmUpliftLearner, fit_base, ipw, predict_base


class TwoPartLearner(MultiArmUpliftLearner):
    """μ(x, a) = P(purchase | x, a) · E[revenue | purchase, x, a]; uplift of a is μ(x, a) − μ(x, control).

    Both parts are single XGBoost models on [X, one-hot(arm)] (as the S-learner's, control first in `arms_` order),
    fitted with inverse-propensity weights: the purchase model (binary:logistic) on every row with the learner's
    tree settings (`n_estimators`, `max_depth`, …); the amount model (reg:gamma) on the rows with revenue > 0, with
    `value_n_estimators`, `value_max_depth` and `value_min_child_weight` (fewer rows: a tenth of the exposures).
    The outcome is a revenue amount (>= 0), so `outcome` must be "revenue" and `objective` None; the base is XGBoost.

    Fitted attributes beyond the base ones: `purchase_model_`, `value_model_`, `n_purchases_`.
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
        value_n_estimators: int = 100,
        value_max_depth: int = 2,
        value_min_child_weight: float = 20.0,
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
        self.value_n_estimators = value_n_estimators
        self.value_max_depth = value_max_depth
        self.value_min_child_weight = value_min_child_weight

    def fit(
        self,
        X: pd.DataFrame | np.ndarray,
        treatment: Sequence[str] | np.ndarray,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        propensity: ArrayLike | None = None,
    ) -> "TwoPartLearner":
        """Fit the purchase model on every row and the amount model on the purchases; returns self."""
        if self.outcome != "revenue" or self.objective is not None:
            raise ValueError(
                "TwoPartLearner splits a revenue amount into purchase × amount: it needs outcome='revenue' and "
                f"objective=None (got outcome={self.outcome!r}, objective={self.objective!r}); use the S-learner "
                "for other outcomes"
            )
        if self.base_model != "xgboost":
            raise ValueError(f"TwoPartLearner has XGBoost parts only; got base_model={self.base_model!r}")
        if np.any(np.asarray(y, dtype=float) < 0):
            raise ValueError("TwoPartLearner needs revenue amounts >= 0 (a purchase's amount is > 0, no purchase 0); "
                             "use the S-learner with outcome='continuous' for outcomes of any sign")
        data = self._validate_fit(X, treatment, y, sample_weight, propensity)
        bought = data.y > 0
        if bought.sum() < 2:
            raise ValueError(f"{int(bought.sum())} rows have revenue > 0; the amount model needs at least 2")
        rows = with_arm(data.X, pd.Index(self.arms_).get_indexer(data.treatment), len(self.arms_))
        weight = ipw(data)
        self.purchase_model_ = fit_base(self._regressor("binary:logistic"), rows, bought.astype(float), weight)
        value = XGBRegressor(
            objective="reg:gamma", **{**self.tree_params(), **self.value_params()}, n_jobs=self.n_jobs,
            random_state=self.random_state, tree_method="hist",
        )
        self.value_model_ = fit_base(value, rows[bought], data.y[bought], weight[bought])
        self.n_purchases_ = int(bought.sum())
        return self

    def value_params(self) -> dict[str, float | int]:
        """The amount model's own tree settings (the rest are the learner's `tree_params`)."""
        return {
            "n_estimators": self.value_n_estimators,
            "max_depth": self.value_max_depth,
            "min_child_weight": self.value_min_child_weight,
        }

    def predict_parts(self, X: pd.DataFrame | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """P(purchase | x, arm) and E[revenue | purchase, x, arm], each (n, 1 + K) in `arms_` order."""
        features = self._validate_predict(X)
        arms = len(self.arms_)
        # One call per part for all (row, arm) pairs: per-call overhead dominates when serving one user.
        stacked = with_arm(np.repeat(features, arms, axis=0), np.tile(np.arange(arms), len(features)), arms)
        purchase = predict_base(self.purchase_model_, stacked).reshape(len(features), arms)
        value = predict_base(self.value_model_, stacked).reshape(len(features), arms)
        return purchase, value

    def predict_outcomes(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Expected revenue P(purchase) · E[amount | purchase] per arm, shape (n, 1 + K), `arms_` order."""
        purchase, value = self.predict_parts(X)
        return purchase.astype(np.float64) * value

    def predict_uplift(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Uplift μ(x, a) − μ(x, control) per treatment, shape (n, K), columns in `treatments_` order."""
        outcomes = self.predict_outcomes(X)
        return outcomes[:, 1:] - outcomes[:, :1]


def with_arm(features: np.ndarray, arm_index: np.ndarray, arms: int) -> np.ndarray:
    """[features, one-hot(arm)] as float32, one column per arm (the S-learner's layout)."""
    one_hot = np.zeros((len(features), arms), dtype=np.float32)
    one_hot[np.arange(len(features)), arm_index] = 1.0
    return np.hstack([np.asarray(features, np.float32), one_hot])
