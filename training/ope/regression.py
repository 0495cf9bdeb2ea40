"""Reward models q̂(x, a, k) for DM and the DR family, as OBP's `RegressionModel` (obp.ope.regression_model).

One clone of `base_model` per slot k (len_list of them), trained on the rounds logged at that slot, with features
[context_i, action_context[a_i]] (action_context defaults to the one-hot identity, as in OBP). A classifier's
q̂ is predict_proba[:, 1] (binary rewards such as clicks), a regressor's is predict. `fitting_method`:

    "normal"  unweighted fit
    "iw"      sample_weight = π_e(a_i | x_i, k) / p_i                  (importance-weighted regression)
    "mrdr"    sample_weight = π_e(a_i | x_i, k) · (1 − p_i) / p_i²      (more robust doubly robust, as OBP)

`fit_predict(..., n_folds=K)` cross-fits: the rounds are split into K folds (`KFold(shuffle=True,
random_state=random_state)`, OBP's split), and the rows of each fold are predicted by models fitted on the other
K − 1 folds only, so a round's q̂ never comes from a model that saw that round — what keeps DR unbiased with a
flexible model. Departure from OBP: the default is n_folds = 3 (OBP's default is 1, in-sample prediction, which is
still available by passing n_folds=1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import KFold

from training.ope.inputs import check_action_dist, check_array, rows_listed

FITTING_METHODS = ("normal", "iw", "mrdr")


@dataclass
class RegressionModel(BaseEstimator):
    """Per-slot reward model q̂(x, a, k) over [context, action_context[a]], cross-fitted by `fit_predict`."""

    base_model: BaseEstimator
    n_actions: int
    len_list: int = 1
    action_context: np.ndarray | None = None
    fitting_method: str = "normal"

    def __post_init__(self) -> None:
        """Validate the settings (the arguments are stored as given)."""
        for name, least in (("n_actions", 2), ("len_list", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
                raise ValueError(f"`{name}` must be an int >= {least}; got {value!r}")
        if self.fitting_method not in FITTING_METHODS:
            raise ValueError(f"`fitting_method` must be one of {FITTING_METHODS}; got {self.fitting_method!r}")
        if not (hasattr(self.base_model, "fit") and hasattr(self.base_model, "get_params")):
            raise ValueError(
                "`base_model` must be a scikit-learn style estimator (get_params, fit, predict or predict_proba), "
                f"e.g. sklearn's LogisticRegression or xgboost's XGBRegressor; got {type(self.base_model).__name__}"
            )
        if self.action_context is not None:
            context = check_array(self.action_context, "action_context", 2)
            if context.shape[0] != self.n_actions:
                raise ValueError(
                    f"`action_context` must have one row per action ({self.n_actions}); got {context.shape[0]}"
                )

    def _action_features(self) -> np.ndarray:
        if self.action_context is None:
            return np.eye(self.n_actions, dtype=int)
        return np.asarray(self.action_context)

    def fit(
        self,
        context: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        pscore: np.ndarray | None = None,
        position: np.ndarray | None = None,
        action_dist: np.ndarray | None = None,
    ) -> RegressionModel:
        """Fit one clone of base_model per slot on the rounds logged there; sets `base_model_list`, returns self."""
        context, action, reward, pscore, position, action_dist = self._checked(
            context, action, reward, pscore, position, action_dist
        )
        self.base_model_list = [self._fitted(k, context, action, reward, pscore, position, action_dist)
                                for k in range(self.len_list)]
        return self

    def predict(self, context: np.ndarray) -> np.ndarray:
        """q̂(x_i, a, k) for every round, action and slot, shape (n_rounds, n_actions, len_list)."""
        if not hasattr(self, "base_model_list"):
            raise NotFittedError("this RegressionModel is not fitted yet; call fit or fit_predict first")
        context = check_array(context, "context", 2)
        n = context.shape[0]
        features = self._action_features()
        # All (round, action) pairs in one design matrix: one predict call per slot instead of n_actions calls.
        design = np.c_[np.repeat(context, self.n_actions, axis=0), np.tile(features, (n, 1))]
        q_hat = np.empty((n, self.n_actions, self.len_list))
        for k, model in enumerate(self.base_model_list):
            predicted = model.predict_proba(design)[:, 1] if is_classifier(model) else model.predict(design)
            q_hat[:, :, k] = np.asarray(predicted, dtype=float).reshape(n, self.n_actions)
        return q_hat

    def fit_predict(
        self,
        context: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        pscore: np.ndarray | None = None,
        position: np.ndarray | None = None,
        action_dist: np.ndarray | None = None,
        n_folds: int = 3,
        random_state: int | None = None,
    ) -> np.ndarray:
        """Cross-fitted q̂ (n_rounds, n_actions, len_list): each fold predicted by models fitted on the others."""
        context, action, reward, pscore, position, action_dist = self._checked(
            context, action, reward, pscore, position, action_dist
        )
        n = context.shape[0]
        if isinstance(n_folds, bool) or not isinstance(n_folds, int | np.integer) or not 1 <= n_folds <= n:
            raise ValueError(f"`n_folds` must be an int in [1, n_rounds = {n}] (1 = in-sample, as OBP's default)")
        if n_folds == 1:
            return self.fit(context, action, reward, pscore, position, action_dist).predict(context)
        q_hat = np.zeros((n, self.n_actions, self.len_list))
        folds = KFold(n_splits=int(n_folds), shuffle=True, random_state=random_state)
        for train, test in folds.split(context):
            self.fit(
                context[train], action[train], reward[train], pscore[train], position[train],
                None if action_dist is None else action_dist[train],
            )
            q_hat[test] = self.predict(context[test])
        return q_hat

    def _fitted(
        self, k: int, context: np.ndarray, action: np.ndarray, reward: np.ndarray, pscore: np.ndarray,
        position: np.ndarray, action_dist: np.ndarray | None,
    ) -> BaseEstimator:
        """A clone of base_model fitted on the rounds logged at slot k."""
        rows = position == k
        if not rows.any():
            raise ValueError(f"no training rounds at slot {k}; every slot in [0, len_list) needs logged rounds")
        model = clone(self.base_model)
        if is_classifier(model) and np.unique(reward[rows]).size < 2:
            raise ValueError(
                f"the rounds at slot {k} hold a single reward value ({reward[rows][0]!r}): a classifier cannot be "
                "fitted; use fewer folds, more data or a regressor"
            )
        design = np.c_[context[rows], self._action_features()[action[rows]]]
        if self.fitting_method == "normal":
            model.fit(design, reward[rows])
            return model
        target = action_dist[np.arange(len(action)), action, k][rows]
        if self.fitting_method == "iw":
            weight = target / pscore[rows]
        else:  # mrdr
            weight = target * (1.0 - pscore[rows]) / pscore[rows] ** 2
        model.fit(design, reward[rows], sample_weight=weight)
        return model

    def _checked(
        self, context: ArrayLike, action: ArrayLike, reward: ArrayLike, pscore: ArrayLike | None,
        position: ArrayLike | None, action_dist: ArrayLike | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        context = check_array(context, "context", 2)
        n = context.shape[0]
        action = check_array(action, "action", 1)
        reward = check_array(reward, "reward", 1).astype(float)
        if not (action.shape[0] == reward.shape[0] == n):
            raise ValueError(
                f"context, action and reward must have the same number of rounds; got {n}, {action.shape[0]}, "
                f"{reward.shape[0]}"
            )
        if not np.issubdtype(action.dtype, np.integer):
            raise ValueError(f"`action` must hold integer action indices; got dtype {action.dtype}")
        outside = (action < 0) | (action >= self.n_actions)
        if outside.any():
            raise ValueError(f"`action` must be in [0, {self.n_actions}); rounds {rows_listed(outside)} are not")
        if pscore is None:
            pscore = np.full(n, 1.0 / self.n_actions)  # OBP's default: only the iw/mrdr weights use it
        pscore = check_array(pscore, "pscore", 1).astype(float)
        if pscore.shape[0] != n or ((pscore <= 0) | (pscore > 1)).any():
            raise ValueError(f"`pscore` must hold {n} logging probabilities in (0, 1]")
        if position is None or self.len_list == 1:
            position = np.zeros(n, dtype=int)
        position = check_array(position, "position", 1)
        if position.shape[0] != n or not np.issubdtype(position.dtype, np.integer):
            raise ValueError(f"`position` must hold {n} integer 0-based slots")
        outside = (position < 0) | (position >= self.len_list)
        if outside.any():
            raise ValueError(
                f"`position` must be in [0, len_list = {self.len_list}); rounds {rows_listed(outside)} are not"
            )
        if self.fitting_method != "normal":
            if action_dist is None:
                raise ValueError(f"fitting_method={self.fitting_method!r} needs `action_dist` (the evaluation policy)")
            action_dist = check_action_dist(action_dist)
            if action_dist.shape != (n, self.n_actions, self.len_list):
                raise ValueError(
                    f"`action_dist` must have shape (n_rounds, n_actions, len_list) = "
                    f"{(n, self.n_actions, self.len_list)}; got {action_dist.shape}"
                )
        return context, action, reward, pscore, position, action_dist
