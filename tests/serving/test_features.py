"""The one-round-trip feature reader returns exactly what Feast's get_online_features returns."""

import math

import numpy as np
import redis

from feature_repo.store import feature_store
from serving.features import FeatureClient
from tests.serving.conftest import FEATURES


def test_reader_matches_feast_get_online_features_for_every_user(served_world):
    settings, redis_url, users = served_world
    store = feature_store(redis_url, settings)
    client = FeatureClient(store, "uplift_v1")
    user_ids = [int(u) for u in users["user_id"]] + [10**9]  # every known user and one unknown
    expected = store.get_online_features(
        features=store.get_feature_service("uplift_v1"), entity_rows=[{"user_id": u} for u in user_ids]
    ).to_dict()
    for i, user in enumerate(user_ids):
        read = client.read(user, FEATURES)
        for name in FEATURES:
            want = expected[name][i]
            got = read.by_name[name]
            assert (want is None and got is None) or math.isclose(float(want), got, rel_tol=1e-6), (user, name, want, got)
        assert read.found is any(expected[name][i] is not None for name in FEATURES)
        assert np.array_equal(np.isnan(read.values), np.array([expected[n][i] is None for n in FEATURES]))


def test_event_timestamps_are_those_of_the_materialized_rows(served_world):
    settings, redis_url, users = served_world
    read = FeatureClient(feature_store(redis_url, settings), "uplift_v1").read(int(users["user_id"].iloc[0]), FEATURES)
    assert set(read.event_timestamps) == {"user_activity_fv", "user_profile_fv"}
    assert all(ts is not None and ts.tzinfo is not None for ts in read.event_timestamps.values())
    unknown = FeatureClient(feature_store(redis_url, settings), "uplift_v1").read(10**9, FEATURES)
    assert not unknown.found and set(unknown.event_timestamps.values()) == {None}


def test_reads_share_a_pipeline_with_other_commands(served_world):
    settings, redis_url, users = served_world
    client = FeatureClient(feature_store(redis_url, settings), "uplift_v1")
    pipe = redis.Redis.from_url(redis_url).pipeline(transaction=False)
    pipe.ping()
    parse = client.queue(pipe, int(users["user_id"].iloc[0]), list(reversed(FEATURES)))
    pipe.ping()
    replies = pipe.execute()
    read = parse(replies)
    direct = client.read(int(users["user_id"].iloc[0]), FEATURES)
    assert replies[0] is True and replies[-1] is True
    assert np.array_equal(read.values, direct.values[::-1], equal_nan=True)
