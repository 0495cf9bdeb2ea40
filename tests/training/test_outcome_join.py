from datetime import timedelta

import pandas as pd
import pytest

from training.outcome_join import (
    DECISION_OUTSIDE_WINDOW,
    NO_DECISION_IN_WINDOW,
    UNKNOWN_DECISION,
    join_outcomes,
)

T0 = 1_772_323_200.0  # 2026-03-01 00:00 UTC
H = 3600.0
W = timedelta(hours=72)


def decisions_frame(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"decision_id": d, "user_key": u, "ts": ts, "surface": "home", "experiments": "{}"} for d, u, ts in rows]
    )


def outcomes_frame(rows: list[tuple[str, str, str | None, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"outcome_id": o, "user_key": u, "decision_id": d, "ts": ts, "kind": "purchase", "revenue": r}
         for o, u, d, ts, r in rows]
    )


def by_decision(join) -> dict[str, tuple[int, float, int]]:
    rows = join.decisions.set_index("decision_id")
    return {k: (int(r.converted), float(r.revenue), int(r.n_outcomes)) for k, r in rows.iterrows()}


def test_outcome_naming_a_decision_goes_to_that_decision_not_the_users_latest():
    decisions = decisions_frame([("d1", "u1", T0), ("d2", "u1", T0 + H)])
    outcomes = outcomes_frame([("o1", "u1", "d1", T0 + 2 * H, 30.0)])
    join = join_outcomes(decisions, outcomes, W)
    assert by_decision(join) == {"d1": (1, 30.0, 1), "d2": (0, 0.0, 0)}
    assert join.outcomes[["attributed_to", "match"]].values.tolist() == [["d1", "decision_id"]]
    assert join.unmatched_counts() == {}


def test_last_touch_takes_the_users_latest_decision_at_or_before_the_outcome():
    decisions = decisions_frame([("d1", "u1", T0), ("d2", "u1", T0 + H), ("d3", "u1", T0 + 5 * H), ("d4", "u2", T0)])
    outcomes = outcomes_frame([("o1", "u1", None, T0 + 2 * H, 12.5), ("o2", "u1", None, T0 + 5 * H, 4.0)])
    join = join_outcomes(decisions, outcomes, W)
    # o1 → d2 (d3 is after it, d1 is older, d4 another user); o2 at exactly d3's ts → d3
    assert by_decision(join) == {"d1": (0, 0.0, 0), "d2": (1, 12.5, 1), "d3": (1, 4.0, 1), "d4": (0, 0.0, 0)}
    assert join.outcomes["match"].tolist() == ["last_touch", "last_touch"]


def test_window_end_is_inclusive_and_later_outcomes_are_counted_unmatched():
    decisions = decisions_frame([("d1", "u1", T0), ("d2", "u2", T0)])
    outcomes = outcomes_frame([
        ("at_end", "u1", None, T0 + 72 * H, 1.0),
        ("late", "u2", None, T0 + 72 * H + 1.0, 2.0),
        ("late_named", "u2", "d2", T0 + 73 * H, 3.0),
    ])
    join = join_outcomes(decisions, outcomes, W)
    assert by_decision(join) == {"d1": (1, 1.0, 1), "d2": (0, 0.0, 0)}
    assert join.outcomes.set_index("outcome_id")["unmatched"].to_dict() == {
        "at_end": None, "late": NO_DECISION_IN_WINDOW, "late_named": DECISION_OUTSIDE_WINDOW,
    }
    assert join.unmatched_counts() == {DECISION_OUTSIDE_WINDOW: 1, NO_DECISION_IN_WINDOW: 1}


def test_outcomes_before_any_decision_or_naming_an_unknown_one_are_unmatched():
    decisions = decisions_frame([("d1", "u1", T0)])
    outcomes = outcomes_frame([
        ("early", "u1", None, T0 - 1.0, 5.0),
        ("early_named", "u1", "d1", T0 - 1.0, 6.0),
        ("stranger", "u9", None, T0 + H, 7.0),
        ("unknown", "u1", "d404", T0 + H, 8.0),  # not guessed at by last touch although d1 would fit
    ])
    join = join_outcomes(decisions, outcomes, W)
    assert by_decision(join) == {"d1": (0, 0.0, 0)}
    assert join.outcomes["attributed_to"].isna().all()
    assert join.unmatched_counts() == {DECISION_OUTSIDE_WINDOW: 1, UNKNOWN_DECISION: 1, NO_DECISION_IN_WINDOW: 2}


def test_two_outcomes_on_one_decision_are_summed():
    decisions = decisions_frame([("d1", "u1", T0), ("d2", "u2", T0)])
    outcomes = outcomes_frame([("o1", "u1", "d1", T0 + H, 10.0), ("o2", "u1", None, T0 + 2 * H, 0.0)])
    join = join_outcomes(decisions, outcomes, W)
    assert by_decision(join) == {"d1": (1, 10.0, 2), "d2": (0, 0.0, 0)}
    assert list(join.decisions.columns) == [
        "decision_id", "user_key", "ts", "surface", "experiments", "converted", "revenue", "n_outcomes",
    ]


def test_equal_timestamps_go_to_the_larger_decision_id_whatever_the_row_order():
    decisions = decisions_frame([("db", "u1", T0), ("da", "u1", T0)])
    outcomes = outcomes_frame([("o1", "u1", None, T0 + H, 1.0)])
    assert join_outcomes(decisions, outcomes, W).outcomes["attributed_to"].tolist() == ["db"]
    assert join_outcomes(decisions.iloc[::-1], outcomes, W).outcomes["attributed_to"].tolist() == ["db"]


def test_a_shorter_window_leaves_the_outcome_unmatched():
    decisions = decisions_frame([("d1", "u1", T0)])
    outcomes = outcomes_frame([("o1", "u1", None, T0 + 2 * H, 1.0)])
    assert join_outcomes(decisions, outcomes, timedelta(hours=1)).unmatched_counts() == {NO_DECISION_IN_WINDOW: 1}


def test_empty_inputs_give_zero_labels_and_all_outcomes_unmatched():
    decisions = decisions_frame([("d1", "u1", T0)])
    assert by_decision(join_outcomes(decisions, outcomes_frame([]).reindex(
        columns=["outcome_id", "user_key", "decision_id", "ts", "kind", "revenue"]), W)) == {"d1": (0, 0.0, 0)}
    join = join_outcomes(decisions.iloc[:0], outcomes_frame([("o1", "u1", None, T0, 1.0)]), W)
    assert join.decisions.empty and join.unmatched_counts() == {NO_DECISION_IN_WINDOW: 1}


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match=r"outcomes lacks columns \['revenue'\]"):
        join_outcomes(decisions_frame([]).reindex(columns=["decision_id", "user_key", "ts"]),
                      pd.DataFrame(columns=["outcome_id", "user_key", "decision_id", "ts"]), W)
