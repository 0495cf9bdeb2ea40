"""Retraining from the decision log: decisions ⨝ outcomes as of now, delay-corrected labels, a held-out gate window.

At time `now` (the loop's clock) each logged decision i, served at ts_i, is one of (training.delay):

    realised   an outcome attributed to it arrived by now: revenue so far, delay = first outcome − ts_i;
    closed     no outcome and its window W is over: revenue 0, final;
    pending    no outcome yet, elapsed c_i = now − ts_i < W: its label is the expected final one,
               q_i · v_a   with q_i = P(converts within W | not by c_i) under the served action's delay model
               (censored MLE on the log itself, `GroupedDelayModel`, family by AIC) and v_a the action's mean revenue
               per realised conversion.

So fresh decisions count with their expected label instead of as non-converting (or being dropped).
`split_gate_window` keeps the last `gate_days` of decisions for the promotion gate (held out of training); the
rest, with the earlier history (the batch training set), is the training set. A logged decision's user is its
keyed hash `user_key` (the log never holds raw ids), which also groups its rows in the user-level holdout split.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd

from training.delay import FAMILIES, GroupedDelayModel, delay_corrected_labels, revenue_per_conversion
from training.logged_training import LoggedRows, logged_rows
from training.outcome_join import join_outcomes
from training.train import TRAINING_COLUMNS

HOUR_S = 3600.0
MIN_CONVERSIONS_TO_CHOOSE = 50  # conversions in the log before delay families are chosen by AIC


@dataclass(frozen=True)
class LabelledLog:
    """Logged decisions up to `now` with realised outcomes, delay-corrected labels, and the delay model used."""

    decisions: pd.DataFrame  # drained records + converted, revenue, delay_hours, elapsed_hours, final, label_revenue
    delay_model: GroupedDelayModel | None  # None when no decision has converted yet (labels are the realised ones)
    now: float


def label_log(
    decisions: pd.DataFrame, outcomes: pd.DataFrame, now: float, window_hours: float = 72.0,
    delay_model: GroupedDelayModel | None = None,
) -> LabelledLog:
    """Join outcomes that arrived by `now` to the decisions served by `now`, then correct the open windows' labels
    with `delay_model` (unfitted; default: per served action, families by AIC once the log holds 50 conversions —
    the exponential alone before —, an action's own delay below 200 conversions pooled)."""
    window = timedelta(hours=window_hours)
    served = decisions.loc[decisions["ts"].astype(float) <= now].reset_index(drop=True)
    arrived = outcomes.loc[outcomes["ts"].astype(float) <= now]
    join = join_outcomes(served, arrived, window)
    frame = join.decisions.reset_index(drop=True)
    first = (join.outcomes.dropna(subset=["attributed_to"]).groupby("attributed_to")["ts"].min())
    ts = frame["ts"].to_numpy(dtype=float)
    first_ts = frame["decision_id"].map(first).to_numpy(dtype=float)
    converted = frame["n_outcomes"].to_numpy() > 0
    delay = np.where(converted, (first_ts - ts) / HOUR_S, np.nan)
    elapsed = np.where(converted, delay, np.minimum((now - ts) / HOUR_S, window_hours))
    action = np.array([c[0] if len(c) else "" for c in frame["chosen"]], dtype=object)
    frame = frame.assign(served_action=action, converted=converted.astype(int), delay_hours=delay,
                         elapsed_hours=elapsed)
    if not converted.any():
        pending = elapsed < window_hours
        return LabelledLog(frame.assign(final=~pending, label_revenue=frame["revenue"].astype(float)), None, now)
    if delay_model is None:
        # Choosing a family by AIC needs conversions to choose on: with a handful, a Weibull fits a step at the few
        # delays seen and expects nothing of the pending rows. Below the threshold only the exponential is fitted.
        families = FAMILIES if converted.sum() >= MIN_CONVERSIONS_TO_CHOOSE else ("exponential",)
        delay_model = GroupedDelayModel(families=families, window_hours=window_hours)
    model = delay_model.fit(elapsed, converted, groups=action)
    values = revenue_per_conversion(frame["revenue"], converted, groups=action)
    labels = delay_corrected_labels(model, frame.assign(converted=converted), values, group_column="served_action")
    frame = frame.assign(final=labels["final"].to_numpy(), label_revenue=labels["label_revenue"].to_numpy())
    return LabelledLog(frame, model, now)


def split_gate_window(log: LabelledLog, gate_days: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training decisions, gate window): the window is every decision of the last `gate_days` before `now`."""
    start = log.now - gate_days * 86_400.0
    ts = log.decisions["ts"].to_numpy(dtype=float)
    return log.decisions.loc[ts < start].reset_index(drop=True), log.decisions.loc[ts >= start].reset_index(drop=True)


def usable_rows(decisions: pd.DataFrame, feature_names: list[str]) -> LoggedRows:
    """`logged_rows` on labelled decisions: revenue is the delay-corrected label."""
    return logged_rows(decisions.assign(revenue=decisions["label_revenue"]), feature_names)


def training_frame(rows: LoggedRows, user_keys: pd.Series) -> pd.DataFrame:
    """Logged rows in the training set's layout (TRAINING_COLUMNS + features): user_id is the decision's user_key."""
    keys = user_keys.reindex(rows.decision_id).to_numpy(dtype=object)
    frame = rows.X.copy()
    frame.insert(0, "user_id", keys)
    frame.insert(1, "event_timestamp", pd.to_datetime(rows.ts, unit="s", utc=True))
    frame.insert(2, "action_id", rows.action)
    frame.insert(3, "propensity", rows.propensity)
    frame.insert(4, "label_revenue", rows.revenue)
    frame["decision_id"] = rows.decision_id
    return frame.reset_index(drop=True)


def with_history(logged: pd.DataFrame, history: pd.DataFrame | None, feature_names: list[str]) -> pd.DataFrame:
    """The logged rows after the earlier history (batch training rows), in one layout; user ids as text so that raw
    ids and keyed hashes never collide in the user-level split."""
    columns = [*TRAINING_COLUMNS, *feature_names]
    parts = []
    if history is not None and len(history):
        missing = [c for c in columns if c not in history.columns]
        if missing:
            raise ValueError(f"the history lacks columns {missing}; pass the batch training set")
        parts.append(history[columns].assign(user_id=history["user_id"].astype(str), source="history"))
    parts.append(logged[columns].assign(user_id=logged["user_id"].astype(str), source="decision_log"))
    out = pd.concat(parts, ignore_index=True)
    out[feature_names] = out[feature_names].astype(np.float32)
    return out


def retrain_due(outcome_ts: np.ndarray, cutoff: float | None, min_new_outcomes: int) -> tuple[bool, int]:
    """(whether to retrain, how many outcomes arrived after `cutoff`): due once at least `min_new_outcomes` did
    (no cutoff: every outcome is new)."""
    if min_new_outcomes < 1:
        raise ValueError(f"min_new_outcomes must be >= 1, got {min_new_outcomes}")
    ts = np.asarray(outcome_ts, dtype=float)
    new = int(len(ts) if cutoff is None else (ts > cutoff).sum())
    return new >= min_new_outcomes, new
