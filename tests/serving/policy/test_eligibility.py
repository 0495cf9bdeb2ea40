"""Eligibility keeps the candidate order, honours the region's allow and block lists, never drops the neutral."""

from serving.policy.eligibility import eligible_actions

CANDIDATES = ["no_action", "pct10_sitewide", "pct20_sitewide", "push_reminder"]


def test_everything_allowed_when_no_lists():
    assert eligible_actions(CANDIDATES, "no_action", None, []) == CANDIDATES


def test_blocked_actions_are_removed_in_order():
    assert eligible_actions(CANDIDATES, "no_action", None, ["pct20_sitewide"]) == [
        "no_action", "pct10_sitewide", "push_reminder"
    ]


def test_allow_list_keeps_only_listed_and_the_neutral():
    assert eligible_actions(CANDIDATES, "no_action", ["push_reminder"], []) == ["no_action", "push_reminder"]


def test_neutral_survives_even_when_blocked_or_not_allowed():
    assert eligible_actions(CANDIDATES, "no_action", [], ["no_action"]) == ["no_action"]
