"""Integration on a real Redis: features read online through uplift_v1 equal the offline point-in-time values."""

import numpy as np
import pandas as pd
import pytest

from feature_repo.definitions import ACTIVITY_TABLE, PROFILE_TABLE, UPLIFT_FEATURE_SERVICE, build_repo
from feature_repo.store import feature_store
from feature_repo.transforms import SnapshotWindow, user_activity_snapshots, user_profile_rows
from feature_repo.contracts import validate_events
from simulator import ShopConfig, build_shop, simulate_events

SHOP = ShopConfig(n_users=300, n_items=60, n_days=6, seed=11)


@pytest.fixture
def materialized(settings, online_redis_url):
    """Feature tables of a small shop written, applied and materialized; yields (store, activity, profile)."""
    shop = build_shop(SHOP)
    accepted = validate_events(simulate_events(shop), pd.Timestamp(SHOP.end)).accepted
    window = SnapshotWindow(pd.Timestamp(SHOP.start), SHOP.n_days)
    activity = user_activity_snapshots(accepted, shop.users["user_id"].to_numpy(), window)
    profile = user_profile_rows(shop.users)
    for table, frame in ((ACTIVITY_TABLE, activity), (PROFILE_TABLE, profile)):
        (settings.data_dir / table).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(settings.data_dir / table, index=False)
    store = feature_store(online_redis_url, settings)
    store.apply(build_repo(settings.data_dir).objects())
    end = window.stamps()[-1] + pd.Timedelta(seconds=1)
    store.materialize(profile["event_timestamp"].min().to_pydatetime(), end.to_pydatetime())
    return store, activity, profile


def test_online_equals_offline_point_in_time(materialized):
    store, activity, _ = materialized
    service = store.get_feature_service(UPLIFT_FEATURE_SERVICE)
    users = [0, 1, 17, 150, 299]
    online = pd.DataFrame(
        store.get_online_features(features=service, entity_rows=[{"user_id": u} for u in users]).to_dict()
    ).set_index("user_id")
    as_of = activity["event_timestamp"].max() + pd.Timedelta(hours=3)
    offline = (
        store.get_historical_features(
            entity_df=pd.DataFrame({"user_id": users, "event_timestamp": [as_of] * len(users)}), features=service
        )
        .to_df()
        .set_index("user_id")
        .loc[users, online.columns]
    )
    assert online.shape == (5, 22)
    assert not online.isna().any().any()
    np.testing.assert_allclose(online.to_numpy(float), offline.to_numpy(float), rtol=1e-6)
    # and both equal the newest snapshot the asset wrote
    newest = activity[activity["event_timestamp"] == activity["event_timestamp"].max()].set_index("user_id")
    np.testing.assert_allclose(online.loc[users, "activity_decayed"], newest.loc[users, "activity_decayed"], rtol=1e-6)


def test_offline_join_never_sees_the_future(materialized):
    store, activity, _ = materialized
    stamps = sorted(activity["event_timestamp"].unique())
    wide = activity.pivot(index="user_id", columns="event_timestamp", values="page_views_total")
    user = int(wide.index[wide[stamps[2]] > wide[stamps[1]]][0])  # a user whose count grows at the third stamp
    at = pd.Timestamp(stamps[2]) - pd.Timedelta(seconds=1)
    joined = store.get_historical_features(
        entity_df=pd.DataFrame({"user_id": [user, user], "event_timestamp": [at, pd.Timestamp(stamps[2])]}),
        features=["user_activity_fv:page_views_total"],
    ).to_df().sort_values("event_timestamp")
    assert list(joined["page_views_total"]) == [wide.loc[user, stamps[1]], wide.loc[user, stamps[2]]]


def test_unknown_user_reads_as_missing_online(materialized):
    store, _, _ = materialized
    row = store.get_online_features(
        features=store.get_feature_service(UPLIFT_FEATURE_SERVICE), entity_rows=[{"user_id": 10**9}]
    ).to_dict()
    assert all(values == [None] for name, values in row.items() if name != "user_id")
