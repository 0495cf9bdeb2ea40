import pandas as pd

from training.labels import attributed_revenue, mature_exposures

T0 = pd.Timestamp("2026-10-01", tz="UTC")
H = pd.Timedelta(hours=1)
W = pd.Timedelta(hours=72)


def test_last_touch_in_the_same_session_within_the_window():
    exposures = pd.DataFrame(
        {"session_id": ["s1", "s1", "s2", "s3"], "ts": [T0, T0 + 2 * H, T0, T0]}, index=[10, 11, 12, 13]
    )
    purchases = pd.DataFrame(
        {
            "session_id": ["s1", "s1", "s1", "s2", "s2", "s9"],
            # s1: before any exposure / after the first only / after the second; s2: at the window's end (out)
            "ts": [T0 - H, T0 + H, T0 + 3 * H, T0 + 72 * H, T0 + 71 * H, T0 + H],
            "revenue": [100.0, 5.0, 7.0, 11.0, 13.0, 17.0],
        }
    )
    labels = attributed_revenue(exposures, purchases, W)
    assert labels.to_dict() == {10: 5.0, 11: 7.0, 12: 13.0, 13: 0.0}


def test_purchases_of_other_sessions_are_not_counted():
    exposures = pd.DataFrame({"session_id": ["a"], "ts": [T0]})
    purchases = pd.DataFrame({"session_id": ["b"], "ts": [T0 + H], "revenue": [50.0]})
    assert attributed_revenue(exposures, purchases, W).tolist() == [0.0]


def test_no_purchases_means_zero_labels():
    exposures = pd.DataFrame({"session_id": ["a"], "ts": [T0]})
    empty = pd.DataFrame({"session_id": pd.Series(dtype=str), "ts": pd.Series(dtype="datetime64[ns, UTC]"),
                          "revenue": pd.Series(dtype=float)})
    assert attributed_revenue(exposures, empty, W).tolist() == [0.0]


def test_only_exposures_whose_window_has_closed_are_mature():
    exposures = pd.DataFrame({"ts": [T0, T0 + 24 * H, T0 + 25 * H]})
    assert mature_exposures(exposures, T0 + 96 * H, W).tolist() == [True, True, False]
