"""The drift stream: each injected drift changes what it says from the shift on, records read like the decision
log's, the cautious policy is followed from the decision it is switched on."""

import numpy as np
import pytest

from serving.store.decision_log import DECISION_FORMAT
from simulator.drift import NEWCOMER_SHARE, PRICE_FACTOR, DriftStream


def halves(scenario: str, name: str) -> tuple[float, float]:
    stream = DriftStream(scenario, seed=1, shift=1000)
    batch = stream.next(2000)
    return float(np.median(batch.features[name][:1000])), float(np.median(batch.features[name][1000:]))


def test_a_broken_feature_is_logged_in_cents_from_the_shift():
    before, after = halves("broken_feature", "avg_order_value")
    assert after / before == pytest.approx(100.0, rel=0.15)


def test_a_price_shock_lowers_order_values_by_its_factor():
    before, after = halves("price_shock", "avg_viewed_price")
    assert after / before == pytest.approx(PRICE_FACTOR, rel=0.1)


def test_a_shifted_population_brings_less_active_newcomers():
    before, after = halves("shifted_population", "page_views_total")
    assert after < before * (1 - NEWCOMER_SHARE * 0.5)


def test_a_stationary_stream_does_not_move_and_the_training_window_leaves_it_in_place():
    stream = DriftStream("stationary", seed=2, shift=1000)
    window = stream.training_window(500)
    assert stream.position == 0 and len(window.users) == 500
    before, after = halves("stationary", "avg_order_value")
    assert after == pytest.approx(before, rel=0.1)


def test_records_carry_the_decision_logs_fields_and_the_cautious_policy_is_followed():
    stream = DriftStream("stationary", seed=3, shift=10_000)
    stream.cautious(200, neutral_share=0.5, epsilon=0.0)
    batch = stream.next(400)
    records = stream.records(batch, model_version="7")
    assert set(records[0]) - {"value"} <= set(DECISION_FORMAT.schema.names)
    assert records[0]["model_version"] == "7" and records[0]["features"]["user_profile_fv"]["values"]["is_mobile"] in (0, 1)
    assert not batch.neutral_forced[:200].any() and 70 < batch.neutral_forced[200:].sum() < 130
    drawn = batch.probabilities[200:][~batch.neutral_forced[200:]]
    assert np.allclose(drawn.max(axis=1), 1.0)  # epsilon 0: greedy
    forced = [r for r in records[200:] if r["fallback"] == "cautious_neutral"]
    assert forced and all(r["chosen"] == ["no_action"] and r["probabilities"][0] == 1.0 for r in forced)


def test_an_unknown_scenario_is_refused():
    with pytest.raises(ValueError, match="scenario must be one of"):
        DriftStream("meteor")
