"""Retraining from the log: outcomes as of now, delay-corrected labels, the gate window, the training layout."""

import json

import numpy as np
import pandas as pd
import pytest

from training.delay import GroupedDelayModel
from training.retrain import label_log, split_gate_window, training_frame, usable_rows, with_history

DAY = 86_400.0
T0 = 1_793_491_200.0  # 2026-11-01T00:00:00Z
FEATURES = ["f"]


def decision(i: int, ts: float, action: str = "a") -> dict:
    return {
        "decision_id": f"d{i}", "user_key": f"u{i % 50}", "ts": ts, "record_version": 2, "fallback": None,
        "redraws": 0, "candidates": ["no_action", "a"], "probabilities": [0.5, 0.5], "chosen": [action],
        "chosen_probabilities": [0.5], "masked_features": [], "model_version": "1",
        "features": json.dumps({"v": {"event_ts": None, "values": {"f": float(i % 7)}}}),
    }


def simulated_log(n: int, seed: int, p: float = 0.1, mean_delay_h: float = 10.0, revenue: float = 20.0):
    """n decisions uniform over 4 days; each converts with p after an Exponential(mean) delay; one outcome each."""
    rng = np.random.default_rng(seed)
    ts = np.sort(T0 + rng.random(n) * 4 * DAY)
    decisions = pd.DataFrame([decision(i, t) for i, t in enumerate(ts)])
    converts = rng.random(n) < p
    at = ts + rng.exponential(mean_delay_h, n) * 3600.0
    outcomes = pd.DataFrame({
        "outcome_id": [f"o{i}" for i in range(n)], "user_key": decisions["user_key"], "decision_id": decisions["decision_id"],
        "ts": at, "revenue": revenue, "kind": "purchase",
    })[converts].reset_index(drop=True)
    return decisions, outcomes


def test_realised_closed_and_pending_decisions_get_their_labels_and_nothing_after_now_counts():
    decisions = pd.DataFrame([decision(0, T0), decision(1, T0 + 10 * 3600), decision(2, T0 + 70 * 3600),
                              decision(3, T0 + 100 * 3600)])
    outcomes = pd.DataFrame({
        "outcome_id": ["o0", "o1"], "user_key": ["u0", "u2"], "decision_id": ["d0", "d2"],
        "ts": [T0 + 5 * 3600, T0 + 90 * 3600], "revenue": [12.0, 30.0], "kind": "purchase",
    })
    now = T0 + 80 * 3600  # d2's outcome (at 90 h) has not happened yet; d3 is not served yet
    # one conversion: only the exponential can be fitted sensibly (AIC would pick a Weibull step at 5 h)
    log = label_log(decisions, outcomes, now, delay_model=GroupedDelayModel(families=("exponential",), min_conversions=1))
    frame = log.decisions.set_index("decision_id")
    assert list(frame.index) == ["d0", "d1", "d2"]
    assert frame.loc["d0", "converted"] == 1 and frame.loc["d0", "delay_hours"] == 5.0
    assert frame.loc["d0", "label_revenue"] == 12.0 and frame.loc["d0", "final"]
    assert frame.loc["d1", "elapsed_hours"] == 70.0 and not frame.loc["d1", "final"]
    assert frame.loc["d2", "elapsed_hours"] == 10.0 and not frame.loc["d2", "final"]
    # pending: the expected remainder, smaller the longer it has waited, never the full order value
    assert 0 < frame.loc["d1", "label_revenue"] < frame.loc["d2", "label_revenue"] < 12.0


def test_corrected_labels_of_an_open_log_add_up_to_the_final_revenue_and_naive_falls_short():
    decisions, outcomes = simulated_log(20_000, seed=1)
    now = T0 + 4 * DAY
    interim = label_log(decisions, outcomes, now)
    final = outcomes.loc[outcomes["ts"] < outcomes["decision_id"].map(decisions.set_index("decision_id")["ts"]) + 72 * 3600,
                         "revenue"].sum()
    naive = interim.decisions["revenue"].sum()
    corrected = interim.decisions["label_revenue"].sum()
    assert naive < 0.95 * final  # the last day's outcomes are mostly still to come
    assert corrected == pytest.approx(final, rel=0.03)
    model = interim.delay_model.model_for("a")
    assert model.p_ == pytest.approx(0.1, rel=0.08)  # the cure model sees through the censoring


def test_the_gate_window_is_the_last_days_and_is_held_out_of_training():
    decisions, outcomes = simulated_log(400, seed=2)
    log = label_log(decisions, outcomes, T0 + 4 * DAY)
    train, gate = split_gate_window(log, gate_days=1)
    assert len(train) + len(gate) == len(log.decisions)
    assert train["ts"].max() < T0 + 3 * DAY <= gate["ts"].min()
    assert not set(train["decision_id"]) & set(gate["decision_id"])


def test_logged_rows_join_the_history_in_one_layout_with_text_user_ids():
    decisions, outcomes = simulated_log(300, seed=3)
    log = label_log(decisions, outcomes, T0 + 4 * DAY)
    rows = usable_rows(log.decisions, FEATURES)
    logged = training_frame(rows, log.decisions.set_index("decision_id")["user_key"])
    assert list(logged.columns[:5]) == ["user_id", "event_timestamp", "action_id", "propensity", "label_revenue"]
    assert list(logged["label_revenue"]) == list(log.decisions.set_index("decision_id").loc[rows.decision_id, "label_revenue"])
    history = pd.DataFrame({"user_id": [7, 8], "event_timestamp": pd.to_datetime([T0, T0], unit="s", utc=True),
                            "action_id": ["a", "no_action"], "propensity": [0.3, 0.7], "label_revenue": [0.0, 5.0],
                            "f": [1.0, 2.0]})
    both = with_history(logged, history, FEATURES)
    assert len(both) == len(logged) + 2 and list(both["source"].unique()) == ["history", "decision_log"]
    assert both["user_id"].map(type).eq(str).all() and both["f"].dtype == np.float32
    with pytest.raises(ValueError, match=r"history lacks columns \['f'\]"):
        with_history(logged, history.drop(columns=["f"]), FEATURES)
