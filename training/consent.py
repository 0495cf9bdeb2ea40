"""Consent events in the lake (`consent/`, drained from the service's audit stream): who has revoked, and whether
the decision log honoured every revocation.

The service's rule (serving/store/consent.py): per user and purpose, the later event by event time wins; at the
same instant a revocation wins. Training takes the state after every event in the lake: a user whose latest event
for a purpose is a revocation is left out of the next training set, all of their rows (`revoked_users`). The
decision log is checked against what the service could know: a revocation binds the decisions made after the
service took the call (`received`, the service's clock), and from then on no served action may need the purpose
(`consent_violations`).

A consent event's `user_id` is the user's pseudonym (the service keys consent like the features,
feature_repo/pseudonyms.py), its `user_key` the trace salt's hash of the raw id, as in the decision log.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import numpy as np
import pandas as pd

EVENT_COLUMNS = ("event_id", "ts", "user_id", "user_key", "purpose", "granted", "received")


def _check(events: pd.DataFrame) -> None:
    missing = sorted(set(EVENT_COLUMNS) - set(events.columns))
    if missing:
        raise ValueError(f"consent events lack columns {missing}; read them with CONSENT_FORMAT "
                         "(serving.store.decision_log)")


def _in_effect(events: pd.DataFrame) -> pd.DataFrame:
    """The event in effect per (user_id, purpose): the latest by ts, a revocation winning a tie."""
    ordered = events.assign(_grant=events["granted"].astype(bool)).sort_values(
        ["user_id", "purpose", "ts", "_grant"], ascending=[True, True, True, False], kind="stable"
    )
    return ordered.drop_duplicates(["user_id", "purpose"], keep="last").drop(columns="_grant")


def revoked_users(events: pd.DataFrame, purposes: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Users whose event in effect (over all of `events`) is a revocation of one of `purposes` (all when None):
    columns user_id, user_key, purpose, ts."""
    _check(events)
    if purposes is not None:
        events = events.loc[events["purpose"].isin(purposes)]
    latest = _in_effect(events)
    return latest.loc[~latest["granted"].astype(bool), ["user_id", "user_key", "purpose", "ts"]].reset_index(drop=True)


def without_revoked(rows: pd.DataFrame, revoked_ids: Collection, column: str = "user_id") -> pd.DataFrame:
    """`rows` without the rows whose `column` is one of `revoked_ids` (lake ids, the users' pseudonyms, for the batch
    training set; user keys for rows from the decision log, whose `user_id` column holds the key)."""
    if column not in rows.columns:
        raise ValueError(f"rows have no {column!r} column to match revoked users on")
    return rows.loc[~rows[column].isin(set(revoked_ids))]


def consent_violations(
    decisions: pd.DataFrame, events: pd.DataFrame, needs_consent: Callable[[str | None, str], tuple[str, ...]],
    neutral_actions: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Decisions that served an action needing a purpose the user had revoked by then.

    For each decision (`ts`, `user_key`, `region`, `candidates`, `chosen`), the consent in effect is the latest (by
    event time) of the user's events the service had received at the decision's time. `needs_consent(region,
    action)` names the purposes an action needs for a user of that region (empty: none); the surface's neutral
    action needs none (`neutral_actions` by surface; for a surface it does not name, the record's first candidate,
    which a promotion surface's record holds first). Returns the offending decisions with the purpose and the
    revocation's `received` time."""
    _check(events)
    columns = ["decision_id", "ts", "user_key", "surface", "action", "purpose", "revoked_received"]
    keyed = events.loc[events["user_key"].astype(str) != ""]
    if keyed.empty or decisions.empty:
        return pd.DataFrame(columns=columns)
    mine = decisions.loc[decisions["user_key"].isin(set(keyed["user_key"]))]
    found = []
    for user, user_events in keyed.groupby("user_key"):
        user_events = user_events.sort_values("received", kind="stable")
        received = user_events["received"].to_numpy(dtype=float)
        for decision in mine.loc[mine["user_key"] == user].itertuples(index=False):
            known = user_events.iloc[: int(np.searchsorted(received, float(decision.ts), side="right"))]
            if known.empty:
                continue
            state = _in_effect(known)
            revoked = state.loc[~state["granted"].astype(bool)].set_index("purpose")["received"]
            neutral = (neutral_actions or {}).get(
                decision.surface, decision.candidates[0] if len(decision.candidates) else None)
            for action in decision.chosen:
                if action == neutral:
                    continue
                for purpose in needs_consent(decision.region, action):
                    if purpose in revoked.index:
                        found.append((decision.decision_id, decision.ts, user, decision.surface, action, purpose,
                                      float(revoked[purpose])))
    return pd.DataFrame(found, columns=columns)
