"""Integration on a real Redis: features read online through uplift_v1 equal the offline point-in-time values."""

import numpy as np
import pandas as pd
import pytest

from feature_repo.definitions import UPLIFT_FEATURE_SERVICE
from simulator import ShopConfig
from tests.feature_repo.factories import materialize_shop
from tests.lake_ids import lake_id

SHOP = ShopConfig(n_users=300, n_items=60, n_days=6, seed=11)


@pytest.fixture
def materialized(settings, online_redis_url):
    """Feature tables of a small shop written, applied and materialized; yields (store, activity, profile)."""
    store, activity, profile, _ = materialize_shop(settings, online_redis_url, SHOP)
    return store, activity, profile


def test_online_equals_offline_point_in_time(materialized, settings):
    store, activity, _ = materialized
    service = store.get_feature_service(UPLIFT_FEATURE_SERVICE)
    users = [lake_id(settings, u) for u in (0, 1, 17, 150, 299)]  # the store is keyed by the users' pseudonyms
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
    # and no row is keyed by a raw id
    raw = store.get_online_features(features=service, entity_rows=[{"user_id": u} for u in (0, 1, 17, 150, 299)])
    assert all(values == [None] * 5 for name, values in raw.to_dict().items() if name != "user_id")


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


def test_unknown_user_reads_as_missing_online(materialized, settings):
    store, _, _ = materialized
    row = store.get_online_features(
        features=store.get_feature_service(UPLIFT_FEATURE_SERVICE), entity_rows=[{"user_id": lake_id(settings, 10**9)}]
    ).to_dict()
    assert all(values == [None] for name, values in row.items() if name != "user_id")
