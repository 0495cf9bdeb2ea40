import numpy as np
import pandas as pd
import pytest

from feature_repo.contracts import validate_events
from feature_repo.transforms import (
    ACTIVITY_FEATURES,
    RECENCY_CAP_DAYS,
    SnapshotWindow,
    user_activity_snapshots,
    user_profile_rows,
)
from tests.feature_repo.factories import START, event, frame

H = pd.Timedelta(hours=1)
D = pd.Timedelta(days=1)


@pytest.fixture
def snapshots() -> pd.DataFrame:
    """User 1 acts over three days; user 2 never does."""
    rows = [
        event(event_id="v1", ts=START + 10 * H, category_id=2, price=10.0, device="mobile"),
        event(event_id="v2", ts=START + 12 * H, category_id=2, price=30.0, device="desktop"),
        event(event_id="x1", ts=START + D + 5 * H, event_type="promo_exposure", item_id=None, category_id=None,
              price=None, action_id="pct10_sitewide", propensity=0.5, surface="home"),
        event(event_id="p1", ts=START + D + 6 * H, event_type="purchase", category_id=2, price=30.0, revenue=25.0),
        # Exactly at the second snapshot's stamp: belongs to the third day, never to the snapshot stamped at it.
        event(event_id="v3", ts=START + 2 * D, category_id=5, price=20.0, device="mobile"),
    ]
    accepted = validate_events(frame(rows), START + 3 * D).accepted
    return user_activity_snapshots(accepted, np.array([1, 2]), SnapshotWindow(START, 3))


def test_layout_is_dense_and_stamped_at_midnights(snapshots):
    assert list(snapshots.columns) == ["user_id", "event_timestamp", *ACTIVITY_FEATURES]
    assert list(snapshots["user_id"]) == [1, 1, 1, 2, 2, 2]
    assert list(snapshots["event_timestamp"]) == [START + D, START + 2 * D, START + 3 * D] * 2
    assert (snapshots[list(ACTIVITY_FEATURES)].dtypes == np.float32).all()


@pytest.mark.parametrize(
    ("feature", "expected"),
    [
        ("page_views_total", [2, 2, 3]),
        ("purchases_total", [0, 1, 1]),
        ("revenue_total", [0, 25, 25]),
        ("avg_order_value", [0, 25, 25]),
        ("avg_viewed_price", [20, 20, 20]),
        ("mobile_view_share", [0.5, 0.5, 2 / 3]),
        ("days_since_last_visit", [0.5, 19 / 24, 1.0]),
        ("days_since_last_purchase", [RECENCY_CAP_DAYS, 0.75, 1.75]),
        ("activity_decayed", [2.0, 1.6, 2.28]),  # z_d = 0.8·z_{d-1} + x_d
        ("purchases_decayed", [0.0, 1.0, 0.8]),
        ("exposures_decayed", [0.0, 1.0, 0.8]),
        ("category_affinity_2", [1.0, 1.0, 2 / 3]),
        ("category_affinity_5", [0.0, 0.0, 1 / 3]),
    ],
)
def test_hand_computed_values(snapshots, feature, expected):
    got = snapshots.loc[snapshots["user_id"] == 1, feature].to_numpy()
    np.testing.assert_allclose(got, np.array(expected, dtype=np.float32), rtol=1e-6)


def test_user_without_history_gets_zeros_and_capped_recency(snapshots):
    quiet = snapshots[snapshots["user_id"] == 2]
    assert (quiet["days_since_last_visit"] == RECENCY_CAP_DAYS).all()
    assert (quiet[["page_views_total", "revenue_total", "activity_decayed"]] == 0).all().all()


def test_event_order_does_not_change_features():
    rows = [event(event_id=f"e{i}", ts=START + i * 7 * H, price=float(i + 1), category_id=i % 8) for i in range(12)]
    window = SnapshotWindow(START, 4)
    ordered = user_activity_snapshots(frame(rows), np.array([1]), window)
    shuffled = user_activity_snapshots(frame(rows).sample(frac=1.0, random_state=3), np.array([1]), window)
    pd.testing.assert_frame_equal(ordered, shuffled)


def test_profile_rows_encode_codes_and_reject_unknown_values():
    users = pd.DataFrame({"user_id": [4, 5], "region": ["west", "north"], "device": ["mobile", "desktop"],
                          "consent_marketing": [True, False], "signup_ts": [START - D, START - 2 * D]})
    rows = user_profile_rows(users)
    assert rows[["region_code", "is_mobile", "consent_marketing"]].to_numpy().tolist() == [[3, 1, 1], [0, 0, 0]]
    users.loc[0, "region"] = "mars"
    with pytest.raises(ValueError, match=r"unknown region/device values \['mars'\]"):
        user_profile_rows(users)


def test_a_stamp_inside_a_day_covers_that_days_events_at_lag_zero():
    """The streaming path's "now" rows: the day of the stamp counts with weight 1, recency from the stamp."""
    from feature_repo.transforms import event_tiles, snapshots_from_tiles

    rows = [event(event_id="v1", ts=START + 10 * H, price=10.0), event(event_id="v2", ts=START + D + 12 * H, price=30.0)]
    tiles = event_tiles(validate_events(frame(rows), START + 3 * D).accepted)
    stamp = START + D + 13 * H
    row = snapshots_from_tiles(tiles, np.array([1]), pd.DatetimeIndex([stamp])).iloc[0]
    assert row["page_views_total"] == 2 and row["avg_viewed_price"] == 20.0
    assert row["activity_decayed"] == np.float32(0.8 * 1 + 1)  # yesterday at λ, today at 1
    assert row["days_since_last_visit"] == np.float32(1 / 24)
    # At the next midnight the same tiles give the daily snapshot, continuously.
    midnight = snapshots_from_tiles(tiles, np.array([1]), pd.DatetimeIndex([START + 2 * D])).iloc[0]
    assert midnight["activity_decayed"] == row["activity_decayed"] and midnight["page_views_total"] == 2
