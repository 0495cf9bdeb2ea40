"""What every multi-action uplift learner shares: arguments, input checks, arms, XGBoost base models.

Learners follow scikit-learn's estimator contract: `__init__` stores its arguments as given, `fit` validates,
builds models, sets attributes ending in `_` and returns `self`; `predict_uplift` checks the learner is fitted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from xgboost import XGBModel, XGBRegressor

from training.learners.linear import LinearBase

log = logging.getLogger(__name__)

OUTCOME_OBJECTIVES = {"revenue": "reg:tweedie", "conversion": "binary:logistic", "continuous": "reg:squarederror"}
"""Default objective per outcome kind: zero-inflated revenue (≥ 0) → Tweedie; 0/1 conversion → logistic; an
outcome of any sign (margin, a change in spend, a standardised score) → squared error."""

BASE_MODELS = ("xgboost", "linear")
"""Base model families: XGBoost trees (default) or a linear model of the same objective (`training.learners.linear`).
A linear base is the right one where the effect is constant or linear (Nie & Wager's setup C: a linear S-learner
beats every tree learner by two orders of magnitude) and a poor one where it is not; model selection
(`training.learners.selection`) chooses between them on the data."""

THIN_ARMS = ("drop", "raise")
"""What fit does with a treatment arm below `min_rows_per_arm` rows: leave it out of `treatments_` (recorded in
`dropped_arms_`, logged as a warning), or refuse the data. A thin control arm always refuses: nothing can be
estimated without it."""

ArrayLike = pd.DataFrame | np.ndarray | Sequence[float]


@dataclass(frozen=True)
class FitData:
    """Validated training arrays."""

    X: np.ndarray
    treatment: np.ndarray
    y: np.ndarray
    weight: np.ndarray
    propensity: np.ndarray | None


class MultiArmUpliftLearner(BaseEstimator):
    """Base of the S-, T-, X- and DR-learners over K actions and one control arm.

    `fit(X, treatment, y, sample_weight=None, propensity=None)`: `propensity` is the logged probability of the
    logged action, used as logged (never re-estimated) by the learners that need it. Fitted attributes:
    `arms_` (control first), `treatments_`, `feature_names_in_`, `n_features_in_`.
    """

    def __init__(
        self,
        control: str = "no_action",
        outcome: str = "revenue",
        objective: str | None = None,
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
        base_model: str = "xgboost",
        thin_arms: str = "drop",
    ):
        self.control = control
        self.outcome = outcome
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
        self.base_model = base_model
        self.thin_arms = thin_arms

    # ---- model factory -------------------------------------------------------------------------------------
    def _outcome_objective(self) -> str:
        if self.objective is not None:
            return self.objective
        if self.outcome not in OUTCOME_OBJECTIVES:
            raise ValueError(f"outcome must be one of {sorted(OUTCOME_OBJECTIVES)}; got {self.outcome!r}")
        return OUTCOME_OBJECTIVES[self.outcome]

    def _regressor(self, objective: str | None = None) -> XGBRegressor | LinearBase:
        """A base model with this learner's hyper-parameters (outcome objective unless given).

        Fit it with `fit_base` (weights normalised to mean 1) and predict with `predict_base`.
        """
        if self.base_model == "linear":
            return LinearBase(objective=objective or self._outcome_objective())
        return XGBRegressor(
            objective=objective or self._outcome_objective(), **self.tree_params(), n_jobs=self.n_jobs,
            random_state=self.random_state, tree_method="hist",
        )

    def tree_params(self) -> dict[str, float | int]:
        """The XGBoost hyper-parameters of this learner's base models (what a baseline "with the learner's
        settings" copies): trees, depth, learning rate, subsampling, leaf weight and L2 penalty."""
        return {
            "n_estimators": self.n_estimators,
            "max_depth": self.max_depth,
            "learning_rate": self.learning_rate,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "reg_lambda": self.reg_lambda,
        }

    # ---- input checks --------------------------------------------------------------------------------------
    def _validate_fit(
        self,
        X: pd.DataFrame | np.ndarray,
        treatment: Sequence[str] | np.ndarray,
        y: ArrayLike,
        sample_weight: ArrayLike | None,
        propensity: ArrayLike | None,
    ) -> FitData:
        """Check and convert fit inputs; sets arms_, treatments_, feature_names_in_, n_features_in_."""
        features = as_matrix(X)
        treatment = np.asarray(treatment).astype(str)
        y = np.asarray(y, dtype=float)
        weight = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        prop = None if propensity is None else np.asarray(propensity, dtype=float)
        lengths = [len(features), len(treatment), len(y), len(weight)] + ([len(prop)] if prop is not None else [])
        if len(set(lengths)) != 1:
            raise ValueError(f"X, treatment, y, sample_weight and propensity must have equal length; got {lengths}")
        if np.any(weight <= 0) or not np.all(np.isfinite(weight)):
            raise ValueError("sample_weight must be finite and > 0")
        if prop is not None and (np.any(prop <= 0) or np.any(prop > 1) or not np.all(np.isfinite(prop))):
            raise ValueError("propensity must be the logged probability of the logged action, in (0, 1]")
        if not np.all(np.isfinite(y)):
            raise ValueError("y must be finite")
        if self.outcome == "conversion" and not np.isin(y, (0.0, 1.0)).all():
            raise ValueError("outcome='conversion' needs y in {0, 1}; use outcome='revenue' for amounts")
        objective = self._outcome_objective()  # fail on an unknown outcome before any fitting
        if objective in ("reg:tweedie", "reg:gamma", "count:poisson") and np.any(y < 0):
            raise ValueError(
                f"objective {objective} needs y >= 0 but {int((y < 0).sum())} rows are negative; use "
                "outcome='continuous' (squared error) for outcomes of any sign"
            )
        if self.base_model not in BASE_MODELS:
            raise ValueError(f"base_model must be one of {list(BASE_MODELS)}; got {self.base_model!r}")
        if self.thin_arms not in THIN_ARMS:
            raise ValueError(f"thin_arms must be one of {list(THIN_ARMS)}; got {self.thin_arms!r}")
        arms, counts = np.unique(treatment, return_counts=True)
        if self.control not in arms:
            raise ValueError(f"control arm {self.control!r} has no rows; arms present: {list(arms)}")
        small = {str(a): int(c) for a, c in zip(arms, counts) if c < self.min_rows_per_arm}
        if self.control in small:
            raise ValueError(
                f"control arm {self.control!r} has {small[self.control]} rows, fewer than "
                f"min_rows_per_arm={self.min_rows_per_arm}: every uplift is measured against it; log more control "
                "rows or lower min_rows_per_arm"
            )
        if small and self.thin_arms == "raise":
            raise ValueError(f"arms with fewer than min_rows_per_arm={self.min_rows_per_arm} rows: {small}")
        self.dropped_arms_ = small
        if small:
            if len(small) == len(arms) - 1:
                raise ValueError(
                    f"every treatment arm has fewer than min_rows_per_arm={self.min_rows_per_arm} rows: {small}; "
                    "nothing to fit"
                )
            log.warning(
                "%d thin arm(s) left out of the fit (fewer than min_rows_per_arm=%d rows): %s; they get no uplift "
                "until more of their rows are logged",
                len(small), self.min_rows_per_arm, small,
            )
            keep = ~np.isin(treatment, list(small))
            features, treatment, y, weight = features[keep], treatment[keep], y[keep], weight[keep]
            prop = None if prop is None else prop[keep]
            arms = np.asarray([a for a in arms if str(a) not in small])
        self.feature_names_in_ = np.asarray(X.columns, dtype=object) if isinstance(X, pd.DataFrame) else None
        self.n_features_in_ = features.shape[1]
        self.treatments_ = [str(a) for a in arms if a != self.control]
        self.arms_ = [self.control, *self.treatments_]
        return FitData(features, treatment, y, weight, prop)

    def _validate_predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Check the learner is fitted and X has the fitted width; returns a float32 matrix."""
        check_is_fitted(self, "treatments_")
        features = as_matrix(X)
        if features.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {features.shape[1]} features; the model was fitted with {self.n_features_in_}")
        return features

    def predict_uplift(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Uplift of each treatment over the control, shape (n, K), columns in `treatments_` order."""
        raise NotImplementedError


def as_matrix(X: pd.DataFrame | np.ndarray) -> np.ndarray:
    """X as a 2-D float32 matrix (missing values as NaN, which XGBoost routes natively)."""
    matrix = X.to_numpy(dtype=np.float32, na_value=np.nan) if isinstance(X, pd.DataFrame) else np.asarray(X, np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"X must be 2-D (rows × features); got shape {matrix.shape}")
    return matrix


def ipw(data: FitData) -> np.ndarray:
    """Sample weights times inverse logged propensity (re-weights each arm's rows to the whole population)."""
    return data.weight if data.propensity is None else data.weight / data.propensity


def check_n_folds(n_folds: object) -> None:
    """Refuse a fold count that is not an int >= 2 (cross-fitting needs a held-out fold and a fitting one)."""
    if isinstance(n_folds, bool) or not isinstance(n_folds, int | np.integer) or n_folds < 2:
        raise ValueError(f"n_folds must be an int >= 2; got {n_folds!r}")


def arm_folds(
    treatment: np.ndarray, arms: Sequence[str], n_folds: int, random_state: int, every_fold: bool = True
) -> np.ndarray:
    """Fold of each row, stratified by arm: within each arm (in `arms` order), a `random_state`-seeded shuffle dealt
    round-robin over the folds, so every fold holds a share of every arm. `every_fold`: refuse an arm with fewer
    rows than folds (some fold would lack it)."""
    rng = np.random.default_rng(random_state)
    fold = np.empty(len(treatment), dtype=np.int64)
    for arm in arms:
        rows = np.flatnonzero(treatment == arm)
        if every_fold and len(rows) < n_folds:
            raise ValueError(f"arm {arm!r} has {len(rows)} rows; cross-fitting needs at least n_folds={n_folds}")
        fold[rng.permutation(rows)] = np.arange(len(rows)) % n_folds
    return fold


def fit_base(model: XGBRegressor | LinearBase, X: np.ndarray, y: np.ndarray, weight: np.ndarray):
    """Fit a base model with `weight` rescaled to mean 1 over the rows given; returns the model.

    Only relative weights carry information. XGBoost's `min_child_weight` and L2 penalty are in units of summed
    weight, so raw inverse propensities (3–13 on the simulator, 1/0.5 = 2 for a constant 50 % design) would turn
    "leaves of at least 50 rows" into leaves of 4–25 rows and shrink less: passing a constant propensity would
    change the fit. Normalised, a constant propensity gives exactly the unweighted fit (tested).
    """
    weight = np.asarray(weight, dtype=float)
    return model.fit(X, y, sample_weight=weight / weight.mean())


def predict_base(model: XGBRegressor | LinearBase, features: np.ndarray) -> np.ndarray:
    """Predictions of a fitted base model on the outcome's scale (XGBoost: without building a DMatrix)."""
    if isinstance(model, XGBModel):
        return booster_predict(model, features)
    return model.predict(features)


def single_threaded(learner: object) -> int:
    """Make every XGBoost model of a fitted learner predict on one thread; returns how many it changed.

    Serving scores one user at a time: an OpenMP team per calling thread buys nothing there, and its worker
    threads spin after each call, burning the cores the other requests need (measured: 3–4 ms of CPU per decision
    with n_jobs=2 vs ~1 ms with one thread).
    """
    changed = 0
    stack = list(vars(learner).values())
    while stack:
        item = stack.pop()
        if isinstance(item, XGBModel):
            item.set_params(n_jobs=1)
            item.get_booster().set_param({"nthread": 1})
            changed += 1
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return changed


def booster_predict(model: XGBRegressor, features: np.ndarray) -> np.ndarray:
    """Predict without building a DMatrix (the serving path scores one user at a time)."""
    return model.get_booster().inplace_predict(features)
