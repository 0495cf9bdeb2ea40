"""Outcomes joined to the decisions that led to them: by decision_id when the outcome names one, else last touch.

An outcome is attributed to one decision, only if decision.ts <= outcome.ts <= decision.ts + window:
- with a decision_id: that decision (an unknown id, or one outside the window, is not guessed at by last touch:
  the decision that caused it is known and was either not logged or is too old);
- without: the latest decision of the same user_key at or before the outcome (last touch); ties on ts go to the
  larger decision_id, so the result does not depend on row order.
Every outcome is either attributed or carries an `unmatched` reason; none is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd

DEFAULT_WINDOW = timedelta(hours=72)
DECISION_COLUMNS = ("decision_id", "user_key", "ts")
OUTCOME_COLUMNS = ("outcome_id", "user_key", "decision_id", "ts", "revenue")
# Why an outcome was not attributed.
UNKNOWN_DECISION = "decision_id_unknown"
DECISION_OUTSIDE_WINDOW = "decision_id_outside_window"
NO_DECISION_IN_WINDOW = "no_decision_in_window"


@dataclass(frozen=True)
class OutcomeJoin:
    """Decisions with their attributed outcomes, and each outcome with where it went."""

    decisions: pd.DataFrame  # the decision columns + converted (0/1), revenue (sum), n_outcomes
    outcomes: pd.DataFrame  # the outcome columns + attributed_to (decision_id or None), match, unmatched (reason)

    def unmatched_counts(self, mask: pd.Series | None = None) -> dict[str, int]:
        """Unattributed outcomes by reason (of the rows in `mask`, when given)."""
        rows = self.outcomes if mask is None else self.outcomes[mask]
        return {str(k): int(v) for k, v in rows["unmatched"].dropna().value_counts().sort_index().items()}


def _require(frame: pd.DataFrame, columns: tuple[str, ...], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}; it needs {list(columns)}")


def join_outcomes(decisions: pd.DataFrame, outcomes: pd.DataFrame, window: timedelta = DEFAULT_WINDOW) -> OutcomeJoin:
    """Attribute each outcome to at most one decision; sum revenue and count outcomes per decision."""
    _require(decisions, DECISION_COLUMNS, "decisions")
    _require(outcomes, OUTCOME_COLUMNS, "outcomes")
    w = window.total_seconds()
    out = outcomes.reset_index(drop=True)
    out_ts = out["ts"].astype(float)
    # by position (out has a RangeIndex): decision attributed to, how, or why not
    attributed = np.full(len(out), None, dtype=object)
    match = np.full(len(out), None, dtype=object)
    unmatched = np.full(len(out), None, dtype=object)

    named = out["decision_id"].notna() & (out["decision_id"].astype(str) != "")
    decision_ts = decisions.drop_duplicates("decision_id").set_index("decision_id")["ts"].astype(float)
    lag = out_ts[named] - out.loc[named, "decision_id"].map(decision_ts)
    by_id = lag.index[(lag >= 0) & (lag <= w)]
    attributed[by_id] = out.loc[by_id, "decision_id"].to_numpy()
    match[by_id] = "decision_id"
    unmatched[lag.index[lag.isna()]] = UNKNOWN_DECISION
    unmatched[lag.index[lag.notna() & ~lag.index.isin(by_id)]] = DECISION_OUTSIDE_WINDOW

    last = _last_touch(decisions, out.loc[~named], w)
    attributed[last.index] = last.to_numpy()
    match[last.index[last.notna()]] = "last_touch"
    unmatched[last.index[last.isna()]] = NO_DECISION_IN_WINDOW

    joined = out.assign(attributed_to=attributed, match=match, unmatched=unmatched)
    per_decision = joined.dropna(subset=["attributed_to"]).groupby("attributed_to")["revenue"].agg(["count", "sum"])
    n = decisions["decision_id"].map(per_decision["count"]).fillna(0).astype(np.int64)
    rows = decisions.assign(
        converted=(n > 0).astype(np.int64),
        revenue=decisions["decision_id"].map(per_decision["sum"]).fillna(0.0).astype(float),
        n_outcomes=n,
    )
    return OutcomeJoin(decisions=rows, outcomes=joined)


def _last_touch(decisions: pd.DataFrame, outcomes: pd.DataFrame, window_s: float) -> pd.Series:
    """For each outcome row, the decision_id of its user's latest decision in [ts - window, ts], else None."""
    result = pd.Series(None, index=outcomes.index, dtype=object)
    if outcomes.empty or decisions.empty:
        return result
    left = pd.DataFrame(
        {"user_key": outcomes["user_key"].astype(str), "ts": outcomes["ts"].astype(float), "row": outcomes.index}
    ).sort_values("ts", kind="stable")
    right = (
        pd.DataFrame({
            "user_key": decisions["user_key"].astype(str), "ts": decisions["ts"].astype(float),
            "decision_id": decisions["decision_id"].astype(str),
        })
        .sort_values(["ts", "decision_id"], kind="stable")  # merge_asof takes the last of equal ts
    )
    # tolerance is inclusive: decision.ts + window == outcome.ts still counts
    found = pd.merge_asof(
        left, right, on="ts", by="user_key", direction="backward", tolerance=window_s, allow_exact_matches=True
    )
    ids = found["decision_id"].astype(object)
    result.loc[found["row"].to_numpy()] = ids.where(ids.notna(), None).to_numpy()
    return result
