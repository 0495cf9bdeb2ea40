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


def train_uplift(
    training_set: pd.DataFrame,
    feature_names: list[str],
    action_costs: dict[str, float],
    learner: MultiArmUpliftLearner,
    holdout_fraction: float = 0.2,
    seed: int = 0,
) -> TrainedUplift:
    """Fit `learner` with inverse-propensity weights on the training users; score the Qini on the holdout users.

    Exposures logged with propensity 1 (the logging policy had no choice, e.g. no marketing consent) say nothing
    about what another action would have done; they are left out of fitting and evaluation.
    """
    missing = [c for c in (*TRAINING_COLUMNS, *feature_names) if c not in training_set.columns]
    if missing:
        raise ValueError(f"training set lacks columns {missing}")
    randomised = training_set["propensity"] < 1.0
    data = training_set.loc[randomised]
    holdout = holdout_mask(data["user_id"].to_numpy(), holdout_fraction, seed)
    train, test = data.loc[~holdout], data.loc[holdout]
    learner.fit(
        train[feature_names],
        train["action_id"].to_numpy(),
        train["label_revenue"].to_numpy(),
        propensity=train["propensity"].to_numpy(),
    )
    unknown = sorted(set(learner.treatments_) - set(action_costs))
    if unknown:
        raise ValueError(f"actions {unknown} were logged but are not in the action catalogue")
    model = UpliftModel(learner, feature_names, {a: float(action_costs[a]) for a in learner.treatments_})
    uplift = model.uplift(test[feature_names].to_numpy(np.float32))
    y, actions = test["label_revenue"].to_numpy(), test["action_id"].to_numpy().astype(str)
    qini = multi_action_qini(y, actions, uplift, learner.treatments_, learner.control)
    metrics = {f"holdout_qini_{k}": v for k, v in qini.items()}
    metrics.update(
        n_train_rows=float(len(train)),
        n_deterministic_rows_skipped=float((~randomised).sum()),
        n_holdout_rows=float(len(test)),
        holdout_mean_predicted_uplift=float(uplift.mean()),
        train_label_mean=float(train["label_revenue"].mean()),
    )
    figure = qini_figure(y, actions, uplift, learner.treatments_, learner.control, qini)
    return TrainedUplift(model, metrics, {"holdout_qini_curves": figure})


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
