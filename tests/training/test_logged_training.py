"""Training rows from logged decision records: logged values in model order, unusable records counted by reason."""

import json

import numpy as np
import pandas as pd
import pytest

from training.logged_training import logged_features, logged_rows

NAMES = ["a", "b", "c"]
F32 = np.float32([0.1, 3.3, -7.123456])  # float32 values whose float64 text is long: they must come back exactly


def features(values=F32, stamp="2026-10-31T00:00:00+00:00") -> str:
    v = [None if x is None else float(x) for x in values]
    return json.dumps({"v1": {"event_ts": stamp, "values": {"a": v[0], "b": v[1]}},
                       "v2": {"event_ts": None, "values": {"c": v[2]}}})


def record(i: int, **changes) -> dict:
    base = {
        "decision_id": f"d{i}", "ts": 1.0 + i, "record_version": 2, "fallback": None, "redraws": 0,
        "candidates": ["no_action", "x"], "probabilities": [0.25, 0.75], "chosen": ["x"],
        "chosen_probabilities": [0.75], "features": features(), "masked_features": [], "model_version": "3",
        "revenue": 10.0 * i, "converted": int(i % 2),
    }
    return {**base, **changes}


def test_logged_values_come_back_as_the_float32_row_serving_scored():
    row = logged_features(features(), NAMES)
    assert row.dtype == np.float32 and row.tobytes() == F32.tobytes()
    assert np.isnan(logged_features(features([0.5, None, 1.0]), NAMES)[1])  # logged as missing: scored as NaN
    masked = logged_features(features(), NAMES, masked=["c"])
    assert masked[:2].tobytes() == F32[:2].tobytes() and np.isnan(masked[2])  # consent hid it from the model
    assert logged_features(features(), [*NAMES, "d"]) is None  # the record holds no "d"


def test_usable_rows_in_order_and_every_other_record_counted_by_reason():
    frame = pd.DataFrame([
        record(0),
        record(1, record_version=None, features=None, slot_probabilities=None),
        record(2, fallback="stale_features", candidates=["no_action"], probabilities=[1.0], chosen=["no_action"],
               chosen_probabilities=[1.0]),
        record(3, redraws=1),
        record(4, candidates=["no_action", "x"], probabilities=[1.0, 0.0], chosen=["no_action"],
               chosen_probabilities=[1.0]),
        record(5, chosen=["no_action"], chosen_probabilities=[0.25], masked_features=["b"]),
        record(6, features=json.dumps({"v1": {"event_ts": None, "values": {"a": 1.0}}})),
    ])
    rows = logged_rows(frame, NAMES)
    assert rows.excluded == {"fallback": 1, "feature_missing": 1, "not_randomized": 1, "record_version_1": 1,
                             "redrawn": 1}
    assert len(rows) + sum(rows.excluded.values()) == len(frame)
    assert list(rows.decision_id) == ["d0", "d5"] and list(rows.action) == ["x", "no_action"]
    assert list(rows.propensity) == [0.75, 0.25] and list(rows.revenue) == [0.0, 50.0]
    assert list(rows.converted) == [0, 1] and list(rows.model_version) == ["3", "3"]
    assert rows.candidates == [["no_action", "x"]] * 2 and rows.probabilities == [[0.25, 0.75]] * 2
    assert list(rows.X.columns) == NAMES and (rows.X.dtypes == np.float32).all()
    assert rows.X.iloc[0].to_numpy().tobytes() == F32.tobytes() and np.isnan(rows.X.iloc[1]["b"])


def test_records_without_outcomes_are_refused_with_what_to_pass():
    frame = pd.DataFrame([record(0)]).drop(columns=["revenue", "converted"])
    with pytest.raises(ValueError, match=r"lack columns \['revenue', 'converted'\].*join_outcomes"):
        logged_rows(frame, NAMES)


def test_no_usable_record_gives_empty_inputs_of_the_right_shape():
    rows = logged_rows(pd.DataFrame([record(0, redraws=2)]), NAMES)
    assert len(rows) == 0 and rows.X.shape == (0, 3) and rows.excluded == {"redrawn": 1}
