"""Fit an uplift learner on a training set and evaluate it on a user-disjoint holdout (metrics, figures)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.stats import norm
from sklearn.base import clone
from xgboost import XGBRegressor

from training.calibration import UpliftRecalibrator, calibration_summary, uplift_calibration
from training.learners import MultiArmUpliftLearner, estimate_ate
from training.metrics import multi_action_auuc, multi_action_qini, policy_value_snips, uplift_at_k
from training.plots import calibration_figure, qini_figure, uplift_curve_figure
from training.pyfunc import UpliftModel, one_hot_rows

TRAINING_COLUMNS = ("user_id", "event_timestamp", "action_id", "propensity", "label_revenue")
"""Columns a training set carries besides the features."""


@dataclass
class TrainedUplift:
    """A fitted model with its holdout metrics, figures and uplift-calibration table."""

    model: UpliftModel
    metrics: dict[str, float]
    figures: dict[str, Figure]
    calibration: pd.DataFrame


def holdout_mask(user_ids: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Deterministic user-level split: a user's rows are all in the holdout or all out, for any data set.

    Users are bucketed by the splitmix64 hash of (user id, seed), so splits with different seeds are independent.
    Ids that are not integers (the decision log's keyed user hashes, or ids kept as text) enter as the first 8 bytes
    of their BLAKE2b digest.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"holdout fraction must be in (0, 1); got {fraction}")
    ids = np.asarray(user_ids)
    if not np.issubdtype(ids.dtype, np.integer):
        ids = np.array([int.from_bytes(hashlib.blake2b(str(u).encode(), digest_size=8).digest(), "little")
                        for u in ids], dtype=np.uint64)
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        z = ids.astype(np.uint64) ^ (np.uint64(seed) * np.uint64(0xD1B54A32D192ED03))
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z % np.uint64(10_000) < np.uint64(int(round(fraction * 10_000)))


@dataclass(frozen=True)
class Split:
    """Randomised exposures split by user into fitting and holdout rows."""

    train: pd.DataFrame
    test: pd.DataFrame
    n_deterministic: int


def split_training_set(training_set: pd.DataFrame, holdout_fraction: float = 0.2, seed: int = 0) -> Split:
    """Drop exposures logged with propensity 1, then split users into training and holdout.

    An exposure the logging policy could not randomise (e.g. no marketing consent: always `no_action`) says nothing
    about what another action would have done, so it is neither fitted nor evaluated.
    """
    randomised = training_set["propensity"] < 1.0
    data = training_set.loc[randomised]
    holdout = holdout_mask(data["user_id"].to_numpy(), holdout_fraction, seed)
    return Split(data.loc[~holdout], data.loc[holdout], int((~randomised).sum()))


CALIBRATION_BINS = 5
"""Bins of predicted uplift per action for the calibration table (a few thousand holdout rows per action)."""
CALIBRATION_KEYS = ("mean_abs_error", "coverage", "slope", "slope_se", "n_bins_usable")


@dataclass
class Evaluation:
    """Holdout metrics and the uplift-calibration tables of one model; figures are drawn only when asked for."""

    metrics: dict[str, float]
    calibration: pd.DataFrame
    curves: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # y, logged actions, uplift, weights
    scores: tuple[dict[str, float], dict[str, float]]  # Qini, AUUC per action
    tables: dict[str, pd.DataFrame]
    treatments: list[str]
    control: str

    def figures(self) -> dict[str, Figure]:
        """Qini curves, uplift curves and calibration panels (the promotion check needs none of them)."""
        y, actions, uplift, weight = self.curves
        qini, auuc = self.scores
        return {
            "holdout_qini_curves": qini_figure(y, actions, uplift, self.treatments, self.control, qini),
            "holdout_uplift_curves": uplift_curve_figure(
                y, actions, uplift, self.treatments, self.control, auuc, weight
            ),
            "holdout_uplift_calibration": calibration_figure(self.tables, pooled=self.calibration),
        }


def greedy_actions(model: UpliftModel, uplift: np.ndarray) -> np.ndarray:
    """The serving policy without exploration: argmax of uplift − unit cost, the control when nothing beats 0."""
    costs = np.array([model.action_costs.get(a, 0.0) for a in model.treatments])
    net = np.column_stack([np.zeros(len(uplift)), uplift - costs[None, :]])
    return np.array([model.control, *model.treatments], dtype=object)[net.argmax(axis=1)]


def evaluate_uplift(model: UpliftModel, test: pd.DataFrame) -> Evaluation:
    """Score a model on labelled holdout exposures.

    Metrics: Qini per action and mean (unweighted, and inverse-propensity weighted), AUUC (weighted), mean
    uplift@30 % over actions, uplift calibration pooled over actions, and the off-policy (SNIPS) net value per
    exposure of the greedy policy vs always `no_action`, both estimated from the logged propensities.
    """
    uplift = model.uplift(test[model.feature_names].to_numpy(np.float32))
    y, actions = test["label_revenue"].to_numpy(float), test["action_id"].to_numpy().astype(str)
    propensity = test["propensity"].to_numpy(float)
    weight = 1.0 / propensity
    treatments, control = model.treatments, model.control
    qini = multi_action_qini(y, actions, uplift, treatments, control)
    qini_ipw = multi_action_qini(y, actions, uplift, treatments, control, sample_weight=weight)
    auuc = multi_action_auuc(y, actions, uplift, treatments, control, sample_weight=weight)
    tables = {}
    for j, action in enumerate(treatments):
        rows = (actions == action) | (actions == control)
        tables[action] = uplift_calibration(
            y[rows], (actions[rows] == action).astype(int), uplift[rows, j], CALIBRATION_BINS, weight[rows]
        ).assign(action=action)
    pooled = pd.concat(tables.values(), ignore_index=True)
    top30 = [
        uplift_at_k(y[rows], uplift[rows, j], (actions[rows] == a).astype(int), k=0.3)
        for j, a in enumerate(treatments)
        for rows in [(actions == a) | (actions == control)]
    ]
    summary = calibration_summary(pooled)
    # Net outcome of each logged exposure: attributed revenue minus the unit cost of the action that was shown.
    net = y - np.array([model.action_costs.get(a, 0.0) for a in actions])
    greedy = policy_value_snips(net, actions, propensity, greedy_actions(model, uplift))
    baseline = policy_value_snips(net, actions, propensity, np.full(len(y), control, dtype=object))
    metrics = {f"holdout_qini_{k}": v for k, v in qini.items()}
    metrics.update({f"holdout_qini_ipw_{k}": v for k, v in qini_ipw.items()})
    metrics.update({f"holdout_auuc_ipw_{k}": v for k, v in auuc.items()})
    metrics.update({f"holdout_calibration_{k}": v for k, v in summary.items() if k in CALIBRATION_KEYS})
    metrics.update(
        n_holdout_rows=float(len(test)),
        holdout_mean_predicted_uplift=float(uplift.mean()),
        holdout_uplift_at_30pct_mean=float(np.nanmean(top30)) if np.isfinite(top30).any() else float("nan"),
        holdout_policy_net_value_snips=greedy.value,
        holdout_policy_net_value_snips_se=greedy.se,
        holdout_no_action_net_value_snips=baseline.value,
        holdout_incremental_net_value_snips=greedy.value - baseline.value,
    )
    return Evaluation(metrics, pooled, (y, actions, uplift, weight), (qini, auuc), tables, treatments, control)


CROSS_FIT_FOLDS = 3
RECALIBRATIONS = ("linear", "shrunk", "none")
"""How `train_uplift` recalibrates the learner's uplift (see there)."""


def cross_fitted_uplift(
    learner: MultiArmUpliftLearner,
    X: pd.DataFrame,
    actions: np.ndarray,
    y: np.ndarray,
    propensity: np.ndarray,
    user_ids: np.ndarray,
    seed: int,
    folds: int = CROSS_FIT_FOLDS,
) -> np.ndarray:
    """Out-of-fold uplift for every row: user-level folds, each scored by a clone fitted on the other folds."""
    fold = np.zeros(len(user_ids), dtype=int)
    for k in range(1, folds):  # peel off one fold at a time with independent user hashes
        fold[(fold == 0) & holdout_mask(user_ids, 1.0 / (folds - k + 1), seed + 100 + k)] = k
    out = np.empty((len(user_ids), len(learner.treatments_)))
    for k in range(folds):
        held = fold == k
        copy = refit_on(learner, X, actions, y, propensity, ~held, f"fold {k}")
        out[held] = copy.predict_uplift(X.loc[held])
    return out


def refit_on(
    learner: MultiArmUpliftLearner, X: pd.DataFrame, actions: np.ndarray, y: np.ndarray, propensity: np.ndarray,
    rows: np.ndarray, what: str,
) -> MultiArmUpliftLearner:
    """A clone of the fitted `learner` fitted on `rows` (a boolean mask or positions, repeats allowed), which must
    keep every one of its treatments: a copy without one could not stand in for it (`what` names the copy)."""
    copy = clone(learner).fit(X.iloc[rows], actions[rows], y[rows], propensity=propensity[rows])
    if copy.treatments_ != learner.treatments_:
        raise ValueError(f"{what} lacks actions {sorted(set(learner.treatments_) - set(copy.treatments_))}; "
                         "use more data")
    return copy


def holdout_uplift_se(learner: MultiArmUpliftLearner, test: pd.DataFrame, feature_names: list[str]) -> dict[str, float]:
    """Standard error of each treatment's AIPW average uplift on the holdout rows (the serving bonus's `s`)."""
    ate = estimate_ate(
        learner, test[feature_names], test["action_id"].to_numpy(), test["label_revenue"].to_numpy(float),
        test["propensity"].to_numpy(float), ipw_fallback=True,
    )
    z = float(norm.ppf(0.975))
    return {row.action: float((row.upper - row.ate) / z) for row in ate.itertuples()}


SD_FLOOR = 1e-6  # least σ distilled (log of 0 is not a target); far below any uplift's spread that matters
SD_MODEL_PARAMS = {"n_estimators": 40, "max_depth": 3, "learning_rate": 0.2, "n_jobs": 1}  # cheap to score per user


def bootstrap_uplift_sd(
    learner: MultiArmUpliftLearner,
    X: pd.DataFrame,
    actions: np.ndarray,
    y: np.ndarray,
    propensity: np.ndarray,
    user_ids: np.ndarray,
    replicates: int,
    seed: int,
    recalibrator: UpliftRecalibrator | None = None,
) -> np.ndarray:
    """σ (n, K) of every row's uplift over `replicates` refits of `learner`, each on a bootstrap sample of the users
    (a user's rows go in together, as often as the user is drawn), recalibrated as the served model is."""
    if replicates < 2:
        raise ValueError(f"the spread of the uplift needs at least 2 bootstrap replicates; got {replicates}")
    users, rows_of = np.unique(user_ids, return_inverse=True)
    by_user = np.argsort(rows_of, kind="stable")
    starts = np.searchsorted(rows_of[by_user], np.arange(len(users) + 1))
    rng = np.random.default_rng([seed, 14, 5])
    predictions = np.empty((replicates, len(X), len(learner.treatments_)))
    for b in range(replicates):
        drawn = rng.integers(0, len(users), size=len(users))
        index = np.concatenate([by_user[starts[u]:starts[u + 1]] for u in drawn])
        uplift = refit_on(learner, X, actions, y, propensity, index, f"bootstrap replicate {b}").predict_uplift(X)
        predictions[b] = uplift if recalibrator is None else recalibrator.transform(uplift)
    return predictions.std(axis=0, ddof=1)


def fit_uplift_sd_model(X: pd.DataFrame, sd: np.ndarray, seed: int) -> XGBRegressor:
    """The per-user uncertainty distilled into one small regressor: log σ on [features, one-hot(treatment)]
    (`training.pyfunc.one_hot_rows`), scored by serving's compiled forest like the S-learner."""
    rows = one_hot_rows(X.to_numpy(np.float32), sd.shape[1])
    target = np.log(np.maximum(sd, SD_FLOOR)).reshape(-1)
    return XGBRegressor(objective="reg:squarederror", random_state=seed, **SD_MODEL_PARAMS).fit(rows, target)


def train_uplift(
    training_set: pd.DataFrame,
    feature_names: list[str],
    action_costs: dict[str, float],
    learner: MultiArmUpliftLearner,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    uncertainty_replicates: int = 0,
    recalibration: str = "linear",
) -> TrainedUplift:
    """Fit `learner` (logged propensities passed as logged) on the training users, recalibrate its uplift on
    cross-fitted predictions (3 more fits of the learner), and evaluate the model on the holdout users. With
    `uncertainty_replicates` = B >= 2 (opt-in: B more fits of the learner), also the per-user uncertainty σ(x, a):
    the spread of B bootstrap refits' uplift on the training rows, distilled into `model.uplift_sd_model`.

    `recalibration` (RECALIBRATIONS): "linear" re-estimates each action's level and spread from the out-of-fold
    rows' revenue (`UpliftRecalibrator`); "shrunk" applies those corrections only as far as their standard errors
    allow (`UpliftRecalibrator(shrink=True)`); "none" serves the learner's own uplift. On the loop's 36,000 rows
    the revenue means are mostly noise and the linear map lowers the true value (docs/benchmarks.md, "The learner
    on the loop's data")."""
    if recalibration not in RECALIBRATIONS:
        raise ValueError(f"recalibration must be one of {list(RECALIBRATIONS)}; got {recalibration!r}")
    missing = [c for c in (*TRAINING_COLUMNS, *feature_names) if c not in training_set.columns]
    if missing:
        raise ValueError(f"training set lacks columns {missing}")
    split = split_training_set(training_set, holdout_fraction, seed)
    train = split.train
    X, actions = train[feature_names], train["action_id"].to_numpy()
    y, propensity = train["label_revenue"].to_numpy(float), train["propensity"].to_numpy(float)
    learner.fit(X, actions, y, propensity=propensity)
    unknown = sorted(set(learner.treatments_) - set(action_costs))
    if unknown:
        raise ValueError(f"actions {unknown} were logged but are not in the action catalogue")
    recalibrator = None
    if recalibration != "none":
        # Fitted on out-of-fold predictions: every training row scored by a copy of the learner that did not see
        # its user.
        out_of_fold = cross_fitted_uplift(learner, X, actions, y, propensity, train["user_id"].to_numpy(), seed)
        recalibrator = UpliftRecalibrator(shrink=recalibration == "shrunk").fit(
            y, actions, out_of_fold, learner.treatments_, learner.control, sample_weight=1.0 / propensity
        )
    costs = {a: float(action_costs[a]) for a in learner.treatments_}
    model = UpliftModel(learner, feature_names, costs, recalibrator)
    evaluation = evaluate_uplift(model, split.test)
    model.uplift_se = holdout_uplift_se(learner, split.test, feature_names)
    metrics = dict(evaluation.metrics)
    if uncertainty_replicates:
        sd = bootstrap_uplift_sd(learner, X, actions, y, propensity, train["user_id"].to_numpy(),
                                 uncertainty_replicates, seed, recalibrator)
        model.uplift_sd_model = fit_uplift_sd_model(X, sd, seed)
        metrics.update(uncertainty_replicates=float(uncertainty_replicates), train_uplift_sd_mean=float(sd.mean()))
    metrics.update(
        recalibrated=float(recalibration != "none"),
        n_train_rows=float(len(train)),
        n_deterministic_rows_skipped=float(split.n_deterministic),
        train_label_mean=float(y.mean()),
    )
    return TrainedUplift(model, metrics, evaluation.figures(), evaluation.calibration)
