"""Training rows from the decision log: the features each decision logged, never a re-join.

A decision record (version 2, `serving.store.decision_log.DECISION_FORMAT`) carries the feature values the service
read through its feature service, per feature view. `logged_rows` turns drained decisions (with their attributed
outcomes, `training.outcome_join.join_outcomes`) into a learner's inputs:

    X[i, j]     = the logged value of feature j (model order) as float32, the dtype serving scores; a feature the
                  record logged as null, or one the consent rules masked (`masked_features`), is NaN, as serving
                  scored it. JSON keeps a float's shortest round-trip text, so float32(X) equals serving's row
                  bit for bit, and a model scores the row here exactly as it scored it in serving.
    action_i    = the first served action (slot 0), propensity_i = its logged probability,
    candidates_i / probabilities_i = the first slot's candidates and distribution (the logging policy's action_dist
                  row for off-policy evaluation), revenue_i / converted_i from the outcome join.

Rows that cannot be used are counted by reason, never dropped silently:
    `record_version_1`  logged before features were (no `features`);
    `fallback`          a fallback answered (the policy did not run, or ran on cached features);
    `redrawn`           served after a reservation conflict (its probability is conditional on concurrent traffic);
    `not_randomized`    one action had probability 1 (e.g. no consent): no other action could have been learned about;
    `feature_missing`   the record lacks a feature the model needs (another feature service).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

REQUIRED_COLUMNS = ("decision_id", "ts", "record_version", "fallback", "redraws", "candidates", "probabilities",
                    "chosen", "chosen_probabilities", "features", "masked_features")


@dataclass(frozen=True)
class LoggedRows:
    """A learner's inputs built from logged decisions, and the decisions left out, by reason."""

    X: pd.DataFrame  # float32, columns in the model's feature order
    action: np.ndarray  # object: the served action (slot 0)
    propensity: np.ndarray  # its logged probability
    candidates: list[list[str]]  # the first slot's candidates
    probabilities: list[list[float]]  # the first slot's distribution over them
    revenue: np.ndarray
    converted: np.ndarray
    decision_id: np.ndarray
    ts: np.ndarray
    model_version: np.ndarray
    excluded: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.X)


def logged_features(features_json: str, feature_names: Sequence[str], masked: Sequence[str] = ()) -> np.ndarray | None:
    """The model row (float32) of one record's logged `features` JSON; None when a feature is not in the record."""
    by_name: dict[str, float | None] = {}
    for view in json.loads(features_json).values():
        by_name.update(view["values"])
    if any(name not in by_name for name in feature_names):
        return None
    hidden = set(masked)
    values = [np.nan if (v := by_name[name]) is None or name in hidden else v for name in feature_names]
    return np.array(values, dtype=np.float32)


def logged_rows(decisions: pd.DataFrame, feature_names: Sequence[str]) -> LoggedRows:
    """Usable rows of `decisions` (drained records + `revenue`/`converted` from the outcome join) as learner inputs."""
    missing = [c for c in (*REQUIRED_COLUMNS, "revenue", "converted") if c not in decisions.columns]
    if missing:
        raise ValueError(
            f"decisions lack columns {missing}: pass drained decision records (read_partitions(..., DECISION_FORMAT)) "
            "joined to their outcomes (training.outcome_join.join_outcomes(...).decisions)"
        )
    excluded: Counter[str] = Counter()
    keep, rows = [], []
    for i, record in enumerate(decisions.itertuples(index=False)):
        reason = _unusable(record)
        row = None
        if reason is None:
            masked = [] if record.masked_features is None else list(record.masked_features)
            row = logged_features(record.features, feature_names, masked)
            reason = "feature_missing" if row is None else None
        if reason is not None:
            excluded[reason] += 1
            continue
        keep.append(i)
        rows.append(row)
    kept = decisions.iloc[keep]
    X = pd.DataFrame(np.vstack(rows) if rows else np.empty((0, len(feature_names)), np.float32),
                     columns=list(feature_names)).astype(np.float32)
    return LoggedRows(
        X=X,
        action=np.array([c[0] for c in kept["chosen"]], dtype=object),
        propensity=np.array([p[0] for p in kept["chosen_probabilities"]], dtype=float),
        candidates=[list(c) for c in kept["candidates"]],
        probabilities=[[float(x) for x in p] for p in kept["probabilities"]],
        revenue=kept["revenue"].to_numpy(dtype=float),
        converted=kept["converted"].to_numpy(dtype=int),
        decision_id=kept["decision_id"].to_numpy(dtype=object),
        ts=kept["ts"].to_numpy(dtype=float),
        model_version=(kept["model_version"] if "model_version" in kept else pd.Series([None] * len(kept)))
        .to_numpy(dtype=object),
        excluded=dict(sorted(excluded.items())),
    )


def _unusable(record) -> str | None:
    """Why a decision record cannot be a training row, or None."""
    version = record.record_version
    if version is None or pd.isna(version) or int(version) < 2 or record.features is None:
        return "record_version_1"
    if record.fallback is not None and not (isinstance(record.fallback, float) and np.isnan(record.fallback)):
        return "fallback"
    if record.redraws is not None and not pd.isna(record.redraws) and int(record.redraws) > 0:
        return "redrawn"
    if len(record.chosen) == 0 or sum(p > 0 for p in record.probabilities) < 2:
        return "not_randomized"
    return None
