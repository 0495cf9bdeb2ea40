"""OnlineWriter on a real Redis against real Feast: the same bytes as Feast's own write, and newer_or_equal rules."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import redis
from feast import FeatureView, Field, FileSource
from feast.types import Bool, Float32, Float64, Int32, Int64, String
from feast.utils import _convert_arrow_to_proto

from feature_repo.definitions import build_repo
from feature_repo.online_writer import OnlineWriter, OnlineWriteError
from feature_repo.store import feature_store

T0 = pd.Timestamp("2026-11-20 08:00:00.123456", tz="UTC")


def mixed_view(repo, data_dir) -> FeatureView:
    """A test-only view with one feature of every type the writer encodes itself, and a string (Feast's codec)."""
    source = FileSource(name="mixed_source", path=str(data_dir / "mixed.parquet"), timestamp_field="event_timestamp")
    return FeatureView(
        name="mixed_fv", entities=[repo.user], ttl=timedelta(0), source=source, online=True,
        schema=[
            Field(name="f32", dtype=Float32), Field(name="f64", dtype=Float64), Field(name="i64", dtype=Int64),
            Field(name="i32", dtype=Int32), Field(name="flag", dtype=Bool), Field(name="label", dtype=String),
        ],
    )


def mixed_frame() -> pd.DataFrame:
    """Edge values: nulls in every column, ±0, ±inf, int extremes, pre-1970, epoch 0, sub-µs event times."""
    return pd.DataFrame({
        "user_id": np.array([0, 1, -5, 2**40, 7, 8, 9], dtype=np.int64),
        "event_timestamp": pd.to_datetime(
            [0, 1_500_000_000_123_456_789, -1_000_000_000_500, 1_800_000_000_000_000_000, 1_000, 999,
             2_000_000_000_000_000_000], utc=True,
        ),
        "f32": np.array([0.0, -0.0, np.nan, np.inf, 1.5, 3.4e38, 1e-45], dtype=np.float32),
        "f64": [0.0, np.nan, -1e300, 2.5, 1 / 3, -0.0, -np.inf],
        "i64": pd.array([0, -1, None, 2**62, -(2**63), 127, 128], dtype="Int64"),
        "i32": pd.array([0, -1, 2**31 - 1, None, -(2**31), 300, 1], dtype="Int32"),
        "flag": [True, False, True, False, True, True, False],
        "label": ["", "héllo", None, "x" * 200, "a", "b", "c"],
    })


@pytest.fixture
def stores(settings, redis_databases):
    """Two FeatureStores of one registry on two flushed Redis databases: (Feast's writes, ours)."""
    repo = build_repo(settings.data_dir)
    urls = [redis_databases.fresh(), redis_databases.fresh()]
    feast_store, our_store = (feature_store(url, settings) for url in urls)
    feast_store.apply([*repo.objects(), mixed_view(repo, settings.data_dir).batch_source, mixed_view(repo, settings.data_dir)])
    our_store.refresh_registry()
    clients = [redis.Redis.from_url(url) for url in urls]
    yield feast_store, our_store, clients
    for client in clients:
        client.close()


def feast_write(store, view_name: str, frame: pd.DataFrame) -> None:
    """What `feast materialize` does with rows: `_convert_arrow_to_proto`, then the online store's write."""
    view = store.get_feature_view(view_name)
    join_keys = {column.name: column.dtype.to_value_type() for column in view.entity_columns}
    rows = _convert_arrow_to_proto(pa.Table.from_pandas(frame), view, join_keys)
    store._get_provider().online_store.online_write_batch(store.config, view, rows, None)


def dump(client: redis.Redis) -> dict[bytes, dict[bytes, bytes]]:
    """Every hash of the database, field by field."""
    return {key: client.hgetall(key) for key in client.keys()}


@pytest.mark.parametrize("chunk_rows", [3, 20_000])
def test_bulk_write_is_byte_identical_to_feast(stores, chunk_rows):
    feast_store, our_store, (feast_client, our_client) = stores
    frame = mixed_frame()
    feast_write(feast_store, "mixed_fv", frame)
    written = OnlineWriter(our_store, chunk_rows=chunk_rows).write("mixed_fv", frame)
    assert written == 7
    expected = dump(feast_client)
    assert len(expected) == 7 and all(len(fields) == 7 for fields in expected.values())
    assert dump(our_client) == expected


def test_key_ttl_seconds_expires_keys_like_feast(stores):
    feast_store, our_store, (feast_client, our_client) = stores
    for store in (feast_store, our_store):
        store.config.online_store.key_ttl_seconds = 3600
    frame = mixed_frame()
    feast_write(feast_store, "mixed_fv", frame)
    OnlineWriter(our_store).write("mixed_fv", frame)
    assert dump(our_client) == dump(feast_client)
    ttls = [our_client.ttl(key) for key in our_client.keys()]
    assert len(ttls) == 7 and all(3590 <= ttl <= 3600 for ttl in ttls)
    our_client.flushdb()
    assert OnlineWriter(our_store).write("mixed_fv", frame, mode="newer_or_equal") == 7
    assert dump(our_client) == dump(feast_client)
    assert all(3590 <= our_client.ttl(key) <= 3600 for key in our_client.keys())


def test_get_online_features_returns_the_written_values(stores):
    _, store, _ = stores
    frame = mixed_frame()
    OnlineWriter(store).write(store.get_feature_view("mixed_fv"), frame)
    names = ["f32", "f64", "i64", "i32", "flag", "label"]
    rows = store.get_online_features(
        features=[f"mixed_fv:{n}" for n in names], entity_rows=[{"user_id": int(u)} for u in frame["user_id"]]
    ).to_dict()
    assert rows["f32"][:2] == [0.0, -0.0] and rows["f32"][2] is None and rows["f32"][3] == float("inf")
    assert rows["f64"][1] is None and rows["f64"][2] == -1e300 and rows["f64"][4] == 1 / 3
    assert rows["i64"] == [0, -1, None, 2**62, -(2**63), 127, 128]
    assert rows["i32"] == [0, -1, 2**31 - 1, None, -(2**31), 300, 1]
    assert rows["flag"] == [True, False, True, False, True, True, False]
    assert rows["label"] == ["", "héllo", None, "x" * 200, "a", "b", "c"]


def test_views_sharing_an_entity_keep_each_others_fields(stores):
    _, store, (_, client) = stores
    writer = OnlineWriter(store)
    activity = store.get_feature_view("user_activity_fv")
    base = {"user_id": np.array([3], dtype=np.int64), "event_timestamp": [T0]}
    writer.write(activity, pd.DataFrame({**base, **{f.name: np.float32(0.5) for f in activity.features}}))
    writer.write("user_profile_fv", pd.DataFrame({**base, "region_code": [2], "is_mobile": [1], "consent_marketing": [0]}))
    row = store.get_online_features(
        features=["user_activity_fv:page_views_total", "user_profile_fv:region_code"], entity_rows=[{"user_id": 3}]
    ).to_dict()
    assert row == {"user_id": [3], "page_views_total": [0.5], "region_code": [2]}
    assert client.dbsize() == 1


def profile_row(user: int, at: pd.Timestamp, region: int) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": np.array([user], dtype=np.int64), "event_timestamp": [at],
        "region_code": [region], "is_mobile": [region + 1], "consent_marketing": [region + 2],
    })


def stored_profile(store, user: int) -> tuple[list, pd.Timestamp]:
    response = store.get_online_features(
        features=["user_profile_fv:region_code", "user_profile_fv:is_mobile", "user_profile_fv:consent_marketing"],
        entity_rows=[{"user_id": user}],
    )
    row = response.to_dict()
    names = list(response.proto.metadata.feature_names.val)
    stamp = response.proto.results[names.index("region_code")].event_timestamps[0]
    return [row["region_code"][0], row["is_mobile"][0], row["consent_marketing"][0]], pd.Timestamp(
        stamp.seconds * 10**9 + stamp.nanos, tz="UTC"
    )


def test_newer_or_equal_refuses_older_and_accepts_equal_and_newer(stores):
    _, store, _ = stores
    writer = OnlineWriter(store)
    write = lambda at, region: writer.write("user_profile_fv", profile_row(5, at, region), mode="newer_or_equal")  # noqa: E731
    assert write(T0, 10) == 1
    assert stored_profile(store, 5) == ([10, 11, 12], T0)
    assert write(T0 - pd.Timedelta(microseconds=1), 20) == 0  # older by one µs: refused, nothing changes
    assert stored_profile(store, 5) == ([10, 11, 12], T0)
    assert write(T0 - pd.Timedelta(days=400), 21) == 0
    assert stored_profile(store, 5) == ([10, 11, 12], T0)
    assert write(T0, 30) == 1  # equal: accepted (Feast's own write path would refuse it)
    assert stored_profile(store, 5) == ([30, 31, 32], T0)
    later = T0 + pd.Timedelta(microseconds=1)
    assert write(later, 40) == 1
    assert stored_profile(store, 5) == ([40, 41, 42], later)


def test_newer_or_equal_compares_against_what_feast_stored(stores):
    _, store, (_, client) = stores
    feast_write(store, "user_profile_fv", profile_row(6, T0, 1))
    before = dump(client)
    writer = OnlineWriter(store)
    assert writer.write("user_profile_fv", profile_row(6, T0 - pd.Timedelta(seconds=1), 2), mode="newer_or_equal") == 0
    assert dump(client) == before
    # seconds equal, nanos smaller: older, refused; a pre-1970 row against a pre-1970 stored one: newer, accepted
    assert writer.write("user_profile_fv", profile_row(6, T0.floor("s"), 3), mode="newer_or_equal") == 0
    old = pd.Timestamp("1960-01-01 00:00:00.5", tz="UTC")
    feast_write(store, "user_profile_fv", profile_row(7, old, 1))
    assert writer.write("user_profile_fv", profile_row(7, old - pd.Timedelta(microseconds=1), 2), mode="newer_or_equal") == 0
    assert writer.write("user_profile_fv", profile_row(7, old + pd.Timedelta(seconds=1), 4), mode="newer_or_equal") == 1
    assert stored_profile(store, 6) == ([1, 2, 3], T0)
    assert stored_profile(store, 7) == ([4, 5, 6], old + pd.Timedelta(seconds=1))


@pytest.mark.parametrize("chunk_rows", [2, 20_000])  # rows of one entity in different script calls, or in one
def test_newer_or_equal_applies_rows_of_one_frame_in_order(stores, chunk_rows):
    _, store, _ = stores
    frame = pd.concat([
        profile_row(8, T0, 1), profile_row(8, T0 - pd.Timedelta(hours=1), 2), profile_row(9, T0, 3),
        profile_row(9, T0 + pd.Timedelta(hours=1), 4), profile_row(9, T0, 5),
    ])
    assert OnlineWriter(store, chunk_rows=chunk_rows).write("user_profile_fv", frame, mode="newer_or_equal") == 3
    assert stored_profile(store, 8) == ([1, 2, 3], T0)
    assert stored_profile(store, 9) == ([4, 5, 6], T0 + pd.Timedelta(hours=1))


def test_newer_or_equal_spans_several_script_calls_per_chunk(stores):
    feast_store, our_store, (feast_client, our_client) = stores
    frame = pd.concat([profile_row(user, T0 + pd.Timedelta(seconds=user), user % 7) for user in range(150)])
    feast_write(feast_store, "user_profile_fv", frame)
    assert OnlineWriter(our_store).write("user_profile_fv", frame, mode="newer_or_equal") == 150
    assert dump(our_client) == dump(feast_client)


def test_bulk_mode_writes_regardless_of_the_stored_time(stores):
    _, store, _ = stores
    writer = OnlineWriter(store)
    writer.write("user_profile_fv", profile_row(4, T0, 1))
    writer.write("user_profile_fv", profile_row(4, T0 - pd.Timedelta(days=1), 2))
    assert stored_profile(store, 4) == ([2, 3, 4], T0 - pd.Timedelta(days=1))


@pytest.mark.parametrize("mode", ["bulk", "newer_or_equal"])
def test_a_refused_command_raises_with_redis_message(stores, mode):
    _, store, (_, client) = stores
    writer = OnlineWriter(store, chunk_rows=2)
    frame = pd.concat([profile_row(user, T0, 1) for user in range(5)])
    writer.write("user_profile_fv", frame.iloc[:1])
    (key,) = client.keys()
    client.delete(key)
    client.set(key, b"not a hash")  # user 0's key now holds a string: HSET (and HGET in the script) must fail
    with pytest.raises(OnlineWriteError, match="WRONGTYPE"):
        writer.write("user_profile_fv", frame, mode=mode)
    assert client.get(key) == b"not a hash"


def test_frame_errors_say_what_is_wrong(stores):
    _, store, _ = stores
    writer = OnlineWriter(store)
    with pytest.raises(ValueError, match=r"lacks columns \['is_mobile'\]"):
        writer.write("user_profile_fv", profile_row(1, T0, 1).drop(columns=["is_mobile"]))
    naive = profile_row(1, T0, 1).assign(event_timestamp=[pd.Timestamp("2026-11-20")])
    with pytest.raises(ValueError, match="tz-aware"):
        writer.write("user_profile_fv", naive)
    with pytest.raises(ValueError, match="mode must be"):
        writer.write("user_profile_fv", profile_row(1, T0, 1), mode="latest")  # type: ignore[arg-type]
    assert writer.write("user_profile_fv", profile_row(1, T0, 1).iloc[:0]) == 0
