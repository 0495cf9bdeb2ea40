"""The one-round-trip feature reader returns exactly what Feast's get_online_features returns."""

import math

import numpy as np
import redis
from feast.protos.feast.types.Value_pb2 import Value

from feature_repo.store import feature_store
from serving.store.features import FeatureClient, _python, decode_value
from tests.lake_ids import door
from tests.serving.conftest import FEATURES


def lake_ids(settings, users) -> list[int]:
    """The ids the online store holds for the shop's users: their pseudonyms under the home's key."""
    pseudonym = door(settings)
    return [pseudonym(int(u)) for u in users["user_id"]]


def test_reader_matches_feast_get_online_features_for_every_user(served_world):
    settings, redis_url, users = served_world
    store = feature_store(redis_url, settings)
    client = FeatureClient(store, "uplift_v1")
    user_ids = lake_ids(settings, users) + [10**9]  # every known user (by pseudonym, as stored) and one unknown
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
        assert read.found is (user != 10**9)  # every user of the shop has rows


def test_event_timestamps_are_those_of_the_materialized_rows(served_world):
    settings, redis_url, users = served_world
    read = FeatureClient(feature_store(redis_url, settings), "uplift_v1").read(lake_ids(settings, users)[0], FEATURES)
    assert set(read.event_timestamps) == {"user_activity_fv", "user_profile_fv"}
    assert all(ts is not None and ts.tzinfo is not None for ts in read.event_timestamps.values())
    unknown = FeatureClient(feature_store(redis_url, settings), "uplift_v1").read(10**9, FEATURES)
    assert not unknown.found and set(unknown.event_timestamps.values()) == {None}


def test_reads_share_a_pipeline_with_other_commands(served_world):
    settings, redis_url, users = served_world
    client = FeatureClient(feature_store(redis_url, settings), "uplift_v1")
    pipe = redis.Redis.from_url(redis_url).pipeline(transaction=False)
    pipe.ping()
    user = lake_ids(settings, users)[0]
    parse = client.queue(pipe, user, list(reversed(FEATURES)))
    pipe.ping()
    replies = pipe.execute()
    read = parse(replies)
    direct = client.read(user, FEATURES)
    assert direct.found
    assert replies[0] is True and replies[-1] is True
    assert np.array_equal(read.values, direct.values[::-1], equal_nan=True)


def test_keys_are_feasts_serialized_entity_keys(served_world):
    settings, redis_url, _ = served_world
    client = FeatureClient(feature_store(redis_url, settings), "uplift_v1")
    assert client._key_prefix is not None  # the fast layout was recognised
    ids = [0, 1, 255, 256, 2**31, 2**32 + 1, 2**62, 2**63 - 1, *np.random.default_rng(0).integers(0, 2**63 - 1, 200).tolist()]
    assert [client._key(u) for u in ids] == [client._feast_key(u) for u in ids]


def test_values_decode_as_feasts_protobuf_parse():
    values = [
        Value(), Value(float_val=0.0), Value(float_val=-1.5), Value(float_val=3.4e38), Value(float_val=float("inf")),
        Value(float_val=1e-45), Value(double_val=2.0**-1074), Value(double_val=-123.456), Value(int64_val=0),
        Value(int64_val=1), Value(int64_val=-1), Value(int64_val=2**63 - 1), Value(int64_val=-(2**63)),
        Value(int64_val=300), Value(int32_val=-7), Value(int32_val=2**31 - 1), Value(bool_val=True),
        Value(bool_val=False), Value(unix_timestamp_val=1_790_000_000),  # not decoded by hand: protobuf's path
    ]
    for value in values:
        raw = value.SerializeToString()
        assert decode_value(raw) == _python(value), (value, raw)
    assert math.isnan(decode_value(Value(float_val=float("nan")).SerializeToString()))
    assert decode_value(None) is None and decode_value(b"") is None
    # Two fields in one message (protobuf keeps the last): not one scalar field, so protobuf parses it.
    doubled = Value(float_val=1.0).SerializeToString() + Value(int64_val=5).SerializeToString()
    assert decode_value(doubled) == _python(Value.FromString(doubled)) == 5.0


def test_values_and_timestamps_equal_feasts_entity_parse_for_every_user(served_world):
    settings, redis_url, users = served_world
    client = FeatureClient(feature_store(redis_url, settings), "uplift_v1")
    for user in lake_ids(settings, users) + [10**9]:
        pipe = client.client.pipeline(transaction=False)
        parse = client.queue(pipe, user, FEATURES)
        replies = pipe.execute()
        read = parse(replies)
        for view, values in zip(client._views, replies):
            ts, features = client._online._get_features_for_entity(values, view.name, [*view.features, f"_ts:{view.name}"])
            assert read.event_timestamps[view.name] == (ts if values[-1] else None)
            for name in view.features:
                want = _python(features[name])
                assert (want is None and read.by_name[name] is None) or want == read.by_name[name], (user, name)
