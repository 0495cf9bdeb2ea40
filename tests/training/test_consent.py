"""Consent events in training: who is left out, and the replay of the decision log against revocations."""

import pandas as pd
import pytest

from training.consent import consent_violations, revoked_users, without_revoked


def events(*rows) -> pd.DataFrame:
    """(event_id, ts, user_id, purpose, granted, received) → a consent lake frame; user_key = 'k<user_id>'."""
    frame = pd.DataFrame(rows, columns=["event_id", "ts", "user_id", "purpose", "granted", "received"])
    return frame.assign(user_key="k" + frame["user_id"].astype(str))


def needs_marketing(region, action):
    return ("consent_marketing",) if region != "lenient" else ()


def decision(decision_id, ts, user, chosen, region="south", candidates=("no_action", "push", "pct10")):
    return {"decision_id": decision_id, "ts": ts, "user_key": f"k{user}", "surface": "home", "region": region,
            "candidates": list(candidates), "chosen": list(chosen)}


def test_the_latest_event_decides_and_a_revocation_wins_a_tie():
    log = events(
        ("a", 100.0, 1, "consent_marketing", False, 100.0), ("b", 200.0, 1, "consent_marketing", True, 201.0),  # regranted
        ("c", 300.0, 2, "consent_marketing", True, 301.0), ("d", 300.0, 2, "consent_marketing", False, 302.0),  # tie
        ("e", 50.0, 3, "consent_marketing", True, 400.0), ("f", 40.0, 3, "consent_marketing", False, 401.0),  # older
        ("g", 10.0, 4, "consent_profiling", False, 11.0),
    )
    assert revoked_users(log).to_dict("records") == [
        {"user_id": 2, "user_key": "k2", "purpose": "consent_marketing", "ts": 300.0},
        {"user_id": 4, "user_key": "k4", "purpose": "consent_profiling", "ts": 10.0},
    ]
    assert revoked_users(log, purposes=("consent_marketing",))["user_id"].tolist() == [2]


def test_revoked_users_rows_leave_by_raw_id_or_by_key():
    rows = pd.DataFrame({"user_id": [1, 2, 2, 3], "x": [0.1, 0.2, 0.3, 0.4]})
    assert without_revoked(rows, {2})["x"].tolist() == [0.1, 0.4]
    keyed = pd.DataFrame({"user_id": ["k1", "k2"], "x": [1, 2]})
    assert without_revoked(keyed, ["k2"])["x"].tolist() == [1]
    with pytest.raises(ValueError, match="no 'user_key' column"):
        without_revoked(rows, {2}, column="user_key")


def test_a_promotion_after_the_service_took_a_revocation_is_a_violation():
    log = events(("r", 100.0, 1, "consent_marketing", False, 150.0), ("g", 300.0, 1, "consent_marketing", True, 300.0))
    decisions = pd.DataFrame([
        decision("before-receipt", 120.0, 1, ["push"]),  # revoked at 100, but the service learnt it at 150
        decision("neutral", 160.0, 1, ["no_action"]),
        decision("violation", 170.0, 1, ["push"]),
        decision("lenient-region", 180.0, 1, ["push"], region="lenient"),  # its rules need no consent
        decision("slate", 190.0, 1, ["no_action", "pct10"]),
        decision("regranted", 310.0, 1, ["push"]),
        decision("other-user", 170.0, 2, ["push"]),
    ])
    found = consent_violations(decisions, log, needs_marketing)
    assert found[["decision_id", "action", "purpose", "revoked_received"]].values.tolist() == [
        ["violation", "push", "consent_marketing", 150.0], ["slate", "pct10", "consent_marketing", 150.0],
    ]


def test_the_surfaces_neutral_action_is_never_a_violation_wherever_it_stands_in_the_record():
    log = events(("r", 100.0, 1, "consent_marketing", False, 100.0))
    items = ("item:7", "item:3", "none")  # an item surface's record: the neutral is not first
    decisions = pd.DataFrame([
        decision("first-item", 110.0, 1, ["item:7"], candidates=items), decision("neutral", 120.0, 1, ["none"], candidates=items),
    ])
    found = consent_violations(decisions, log, needs_marketing, neutral_actions={"home": "none"})
    assert found["decision_id"].tolist() == ["first-item"]


def test_no_consent_events_no_violations_and_missing_columns_are_named():
    decisions = pd.DataFrame([decision("x", 1.0, 1, ["push"])])
    assert consent_violations(decisions, events(), needs_marketing).empty
    with pytest.raises(ValueError, match=r"lack columns \['received'\]"):
        consent_violations(decisions, events().drop(columns="received"), needs_marketing)
