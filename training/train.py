"""Fit the uplift learner on a training set, evaluate it on a user-disjoint holdout, and draw its Qini curves."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # headless: figures are written to PNG, never shown
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from training.metrics import multi_action_qini, qini_curve  # noqa: E402
from training.pyfunc import UpliftModel  # noqa: E402
from training.learners import MultiArmUpliftLearner  # noqa: E402

TRAINING_COLUMNS = ("user_id", "event_timestamp", "action_id", "propensity", "label_revenue")
"""Columns a training set carries besides the features."""


@dataclass
class TrainedUplift:
    """A fitted model with its holdout metrics and figures."""

    model: UpliftModel
    metrics: dict[str, float]
    figures: dict[str, Figure]


def holdout_mask(user_ids: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Deterministic user-level split: a user's rows are all in the holdout or all in training."""
    if not 0 < fraction < 1:
        raise ValueError(f"holdout fraction must be in (0, 1); got {fraction}")
    # Knuth's multiplicative hash spreads consecutive ids; the seed shifts which users land in the holdout.
    bucket = ((np.asarray(user_ids, dtype=np.uint64) + np.uint64(seed)) * np.uint64(2654435761)) % np.uint64(10_000)
    return bucket < np.uint64(int(round(fraction * 10_000)))


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


def evaluate_uplift(model: UpliftModel, test: pd.DataFrame) -> tuple[dict[str, float], dict[str, Figure]]:
    """Holdout metrics (Qini per action and mean) and figures of a model on labelled exposures."""
    uplift = model.uplift(test[model.feature_names].to_numpy(np.float32))
    y, actions = test["label_revenue"].to_numpy(), test["action_id"].to_numpy().astype(str)
    qini = multi_action_qini(y, actions, uplift, model.treatments, model.control)
    metrics = {f"holdout_qini_{k}": v for k, v in qini.items()}
    metrics.update(n_holdout_rows=float(len(test)), holdout_mean_predicted_uplift=float(uplift.mean()))
    figures = {"holdout_qini_curves": qini_figure(y, actions, uplift, model.treatments, model.control, qini)}
    return metrics, figures


def train_uplift(
    training_set: pd.DataFrame,
    feature_names: list[str],
    action_costs: dict[str, float],
    learner: MultiArmUpliftLearner,
    holdout_fraction: float = 0.2,
    seed: int = 0,
) -> TrainedUplift:
    """Fit `learner` (logged propensities passed as logged) on the training users; evaluate on the holdout users."""
    missing = [c for c in (*TRAINING_COLUMNS, *feature_names) if c not in training_set.columns]
    if missing:
        raise ValueError(f"training set lacks columns {missing}")
    split = split_training_set(training_set, holdout_fraction, seed)
    learner.fit(
        split.train[feature_names],
        split.train["action_id"].to_numpy(),
        split.train["label_revenue"].to_numpy(),
        propensity=split.train["propensity"].to_numpy(),
    )
    unknown = sorted(set(learner.treatments_) - set(action_costs))
    if unknown:
        raise ValueError(f"actions {unknown} were logged but are not in the action catalogue")
    model = UpliftModel(learner, feature_names, {a: float(action_costs[a]) for a in learner.treatments_})
    metrics, figures = evaluate_uplift(model, split.test)
    metrics.update(
        n_train_rows=float(len(split.train)),
        n_deterministic_rows_skipped=float(split.n_deterministic),
        train_label_mean=float(split.train["label_revenue"].mean()),
    )
    return TrainedUplift(model, metrics, figures)


def qini_figure(
    y: np.ndarray, actions: np.ndarray, uplift: np.ndarray, treatments: list[str], control: str, qini: dict[str, float]
) -> Figure:
    """One Qini curve per treatment (fraction targeted vs incremental outcome), with the random line."""
    figure, ax = plt.subplots(figsize=(8, 5))
    for j, action in enumerate(treatments):
        rows = (actions == action) | (actions == control)
        x, q = qini_curve(y[rows], uplift[rows, j], (actions[rows] == action).astype(int))
        line = ax.plot(x / x[-1], q, label=f"{action} (Qini {qini[action]:.3f})")[0]
        ax.plot([0, 1], [0, q[-1]], linestyle=":", color=line.get_color(), linewidth=0.8)
    ax.set_xlabel("fraction of users targeted (by predicted uplift)")
    ax.set_ylabel("incremental revenue (Qini)")
    ax.set_title(f"Holdout Qini curves — mean Qini {qini['mean']:.3f}")
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure
