import pandas as pd

from training.labels import attributed_revenue, mature_exposures

T0 = pd.Timestamp("2026-10-01", tz="UTC")
H = pd.Timedelta(hours=1)


def test_revenue_inside_the_window_only_and_per_user():
    exposures = pd.DataFrame({"user_id": [1, 1, 2], "ts": [T0, T0 + 50 * H, T0]}, index=[10, 11, 12])
    purchases = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 3],
            "ts": [T0 - H, T0, T0 + 71 * H, T0 + 72 * H, T0 + H],  # before / at start / inside / at end (excluded)
            "revenue": [100.0, 5.0, 7.0, 11.0, 13.0],
        }
    )
    labels = attributed_revenue(exposures, purchases, pd.Timedelta(hours=72))
    assert labels.to_dict() == {10: 12.0, 11: 7.0, 12: 0.0}


def test_no_purchases_means_zero_labels():
    exposures = pd.DataFrame({"user_id": [1], "ts": [T0]})
    empty = pd.DataFrame({"user_id": pd.Series(dtype="int64"), "ts": pd.Series(dtype="datetime64[ns, UTC]"),
                          "revenue": pd.Series(dtype=float)})
    assert attributed_revenue(exposures, empty, pd.Timedelta(hours=1)).tolist() == [0.0]


def test_only_exposures_whose_window_has_closed_are_mature():
    exposures = pd.DataFrame({"ts": [T0, T0 + 24 * H, T0 + 25 * H]})
    assert mature_exposures(exposures, T0 + 96 * H, pd.Timedelta(hours=72)).tolist() == [True, True, False]
