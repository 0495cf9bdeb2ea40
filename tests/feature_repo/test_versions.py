"""Schema versions on real Feast, a real Redis and a real MLflow store: explicit view versions, pins, dual write.

The first two tests pin down what Feast 0.67's own versioning does with Redis, the reason it is not used.
"""

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import redis
from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.infra.online_stores.redis import _versioned_fv_name
from feast.repo_config import RepoConfig
from feast.types import Float32, Float64

from feature_repo.definitions import build_repo
from feature_repo.materialize import fast_materialize
from feature_repo.pseudonyms import lake_pseudonymizer
from feature_repo.versions import (
    definition_view_pins, format_view_pins, next_view_version, online_write_plan, parse_view_pins, schema_hash,
    service_view_pins, view_version, view_version_name,
)
from infra import keys
from simulator import ShopConfig
from tests.feature_repo.factories import materialize_shop
from tests.feature_repo.versioned_repo import ACTIVITY_V2_FEATURES, NEW_FEATURE, activity_v2_rows, apply_v2

SHOP = ShopConfig(n_users=120, n_items=30, n_days=4, seed=21)
RAW_USERS = [0, 1, 7, 60, 119]


# -- Feast 0.67's own versioning with Redis -------------------------------------------------------------------


def _native_store(tmp_path, redis_url: str) -> FeatureStore:
    config = RepoConfig(
        project="native", provider="local",
        registry={"path": str(tmp_path / "registry.db"), "enable_online_feature_view_versioning": True,
                  "cache_ttl_seconds": 0},
        online_store={"type": "redis", "connection_string": redis_url.split("//", 1)[1].replace("/", ",db=")},
        offline_store={"type": "file"}, entity_key_serialization_version=3,
    )
    config.repo_path = tmp_path
    return FeatureStore(repo_path=str(tmp_path), config=config)


def _native_objects(tmp_path, features: list[str]) -> list:
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    source = FileSource(name="src", path=str(tmp_path / "src.parquet"), timestamp_field="event_timestamp")
    view = FeatureView(name="fv", entities=[user], ttl=timedelta(days=2), source=source,
                       schema=[Field(name=name, dtype=Float32) for name in features])
    return [user, source, view, FeatureService(name=f"svc_{'_'.join(features)}", features=[view])]


@pytest.fixture
def native(tmp_path, online_redis_url):
    """A Feast repo with native versioning on: `fv` applied with (a, b), then its schema changed to (a, c)."""
    at = pd.Timestamp("2026-10-01", tz="UTC")
    pd.DataFrame({"user_id": [1], "a": [1.5], "b": [10.0], "c": [7.0], "event_timestamp": [at]}).to_parquet(
        tmp_path / "src.parquet")
    _native_store(tmp_path, online_redis_url).apply(_native_objects(tmp_path, ["a", "b"]))
    store = _native_store(tmp_path, online_redis_url)
    store.apply(_native_objects(tmp_path, ["a", "c"]))
    return store, at


def test_feast_bumps_the_version_but_a_plain_reapply_resets_it_onto_the_old_versions_keys(native, tmp_path, online_redis_url):
    store, _ = native
    assert [v["version"] for v in store.list_feature_view_versions("fv")] == ["v0", "v1"]
    assert _versioned_fv_name(store.get_feature_view("fv"), store.config) == "fv_v1"
    # `feast apply` of unchanged definitions, from fresh objects, as every apply is:
    again = _native_store(tmp_path, online_redis_url)
    again.apply(_native_objects(tmp_path, ["a", "c"]))
    view = again.get_feature_view("fv")
    assert [f.name for f in view.features] == ["a", "c"]  # still the v1 schema ...
    assert _versioned_fv_name(view, again.config) == "fv"  # ... now keyed like v0: writes would overwrite v0's rows


def test_feast_reads_a_service_over_a_latest_v1_view_under_the_unversioned_name(native, online_redis_url):
    store, at = native
    store.materialize(at - timedelta(days=1), at + timedelta(seconds=1), feature_views=["fv"])
    client = redis.Redis.from_url(online_redis_url)
    (key,) = client.keys()
    assert sorted(f for f in client.hkeys(key) if f.startswith(b"_ts:")) == [b"_ts:fv_v1"]
    rows = [{"user_id": 1}]
    assert store.get_online_features(features=["fv:a", "fv:c"], entity_rows=rows).to_dict() == {
        "user_id": [1], "a": [1.5], "c": [7.0]}
    service = store.get_feature_service("svc_a_c")
    # The same view through a feature service: the projection's copy loses current_version_number, reads "fv".
    assert store.get_online_features(features=service, entity_rows=rows).to_dict() == {
        "user_id": [1], "a": [None], "c": [None]}


# -- names and pins -----------------------------------------------------------------------------------------


def test_version_names_follow_the_rule():
    assert view_version_name("user_activity", 1) == "user_activity_fv"
    assert view_version_name("user_activity", 2) == "user_activity_v2_fv"
    assert view_version("user_activity_v12_fv") == ("user_activity", 12)
    assert view_version("user_profile_fv") == ("user_profile", 1)
    assert next_view_version("user_activity_fv") == "user_activity_v2_fv"
    assert next_view_version("user_activity_v2_fv") == "user_activity_v3_fv"
    with pytest.raises(ValueError, match=r"feature view 'activity' is not named <stem>_fv or <stem>_v<N>_fv"):
        view_version("activity")
    with pytest.raises(ValueError, match=r"version 1 is named user_activity_fv"):
        view_version("user_activity_v1_fv")


def test_schema_hash_sees_schema_and_nothing_else(tmp_path):
    repo = build_repo(tmp_path)
    view = repo.user_activity_fv
    same = FeatureView(name=view.name, entities=[repo.user], ttl=timedelta(days=9), source=view.batch_source,
                       schema=list(reversed(view.schema)), tags={"owner": "someone else"})
    assert schema_hash(same) == schema_hash(view)
    retyped = FeatureView(name=view.name, entities=[repo.user], source=view.batch_source,
                          schema=[Field(name=f.name, dtype=Float64 if i == 0 else f.dtype) for i, f in enumerate(view.features)])
    dropped = FeatureView(name=view.name, entities=[repo.user], source=view.batch_source, schema=view.schema[1:])
    assert len({schema_hash(view), schema_hash(dropped), schema_hash(retyped)}) == 3
    pins = definition_view_pins("uplift_v1")
    assert list(pins) == ["user_activity_fv", "user_profile_fv"]
    assert parse_view_pins(format_view_pins(pins)) == pins
    assert format_view_pins(pins) == f"user_activity_fv@{pins['user_activity_fv']},user_profile_fv@{pins['user_profile_fv']}"
    assert definition_view_pins("uplift_v9") is None
    with pytest.raises(ValueError, match=r"'user_activity_fv' is not <view>@<schema hash>"):
        parse_view_pins("user_activity_fv")


# -- two versions in one registry and one Redis ---------------------------------------------------------------


@pytest.fixture
def users(settings) -> list[int]:
    """The lake ids (pseudonyms) of `RAW_USERS` under the home's key: what the tables and Redis are keyed by (the key
    is made here when the shop is not materialized yet; `materialize_shop` then keys the tables by it)."""
    door = lake_pseudonymizer(path=keys.key_file(settings))
    return [door(u) for u in RAW_USERS]


@pytest.fixture
def versioned(settings, online_redis_url, users):
    """A shop materialized through uplift_v1, then activity v2 (uplift_v2) applied next to it, not yet written."""
    store, activity, profile, _ = materialize_shop(settings, online_redis_url, SHOP)
    repo = build_repo(settings.data_dir)
    v1_online = store.get_online_features(
        features=store.get_feature_service("uplift_v1"), entity_rows=[{"user_id": u} for u in users]).to_dict()
    assert None not in v1_online["page_views_total"]  # the users' rows are there, under their pseudonyms
    client = redis.Redis.from_url(online_redis_url)
    v1_bytes = {key: client.hgetall(key) for key in client.keys()}
    apply_v2(store, repo, settings.data_dir, activity)
    return store, activity, profile, v1_online, v1_bytes, client


def _window(activity: pd.DataFrame, profile: pd.DataFrame):
    start = profile["event_timestamp"].min().to_pydatetime()
    return start, (activity["event_timestamp"].max() + pd.Timedelta(seconds=1)).to_pydatetime()


def test_registry_pins_equal_the_definitions_and_v2_is_a_new_view(versioned):
    store = versioned[0]
    assert service_view_pins(store, "uplift_v1") == definition_view_pins("uplift_v1")
    v2 = service_view_pins(store, "uplift_v2")
    assert list(v2) == ["user_activity_v2_fv", "user_profile_fv"]
    assert v2["user_profile_fv"] == definition_view_pins("uplift_v1")["user_profile_fv"]
    assert v2["user_activity_v2_fv"] != definition_view_pins("uplift_v1")["user_activity_fv"]


def test_dual_write_keeps_the_old_versions_values_exactly_and_adds_the_new(versioned, users):
    store, activity, profile, v1_online, v1_bytes, client = versioned
    in_use = {"user_activity_fv": ("1",), "user_profile_fv": ("1", "2"), "user_activity_v2_fv": ("2",)}
    plan = online_write_plan(store, "uplift_v2", in_use)
    assert plan.write == ("user_activity_v2_fv", "user_profile_fv", "user_activity_fv") and plan.retired == ()
    written = fast_materialize(store, list(plan.write), *_window(activity, profile), mode="newer_or_equal")
    assert written == {"user_activity_v2_fv": SHOP.n_users, "user_profile_fv": SHOP.n_users, "user_activity_fv": SHOP.n_users}
    rows = [{"user_id": u} for u in users]
    assert store.get_online_features(features=store.get_feature_service("uplift_v1"), entity_rows=rows).to_dict() == v1_online
    for key, fields in v1_bytes.items():  # every field v1 wrote is byte for byte what it was
        assert {f: v for f, v in client.hgetall(key).items() if f in fields} == fields
    v2 = pd.DataFrame(store.get_online_features(
        features=store.get_feature_service("uplift_v2"), entity_rows=rows).to_dict()).set_index("user_id")
    newest = activity_v2_rows(activity[activity["event_timestamp"] == activity["event_timestamp"].max()])
    newest = newest.set_index("user_id").loc[users]
    assert "mobile_view_share" not in v2.columns
    np.testing.assert_allclose(v2[NEW_FEATURE].to_numpy(float), newest[NEW_FEATURE].to_numpy(float), rtol=1e-6)
    np.testing.assert_allclose(v2[list(ACTIVITY_V2_FEATURES)].to_numpy(float),
                               newest[list(ACTIVITY_V2_FEATURES)].to_numpy(float), rtol=1e-6)


def test_historical_features_of_both_versions_from_the_file_offline_store(versioned, users):
    store, activity = versioned[0], versioned[1]
    as_of = activity["event_timestamp"].max() + pd.Timedelta(hours=1)
    entities = pd.DataFrame({"user_id": users, "event_timestamp": [as_of] * len(users)})
    old = store.get_historical_features(entity_df=entities, features=store.get_feature_service("uplift_v1")).to_df()
    new = store.get_historical_features(entity_df=entities, features=store.get_feature_service("uplift_v2")).to_df()
    old, new = old.set_index("user_id").loc[users], new.set_index("user_id").loc[users]
    assert old["page_views_total"].notna().all()  # joined on the users' pseudonyms, as the tables hold them
    assert "mobile_view_share" in old.columns and NEW_FEATURE not in old.columns
    assert "mobile_view_share" not in new.columns and NEW_FEATURE in new.columns
    np.testing.assert_allclose(old["page_views_total"], new["page_views_total"], rtol=0)


def test_write_plan_retires_a_version_only_when_no_model_pins_it(versioned):
    store = versioned[0]
    both = {"user_activity_fv": ("1",), "user_activity_v2_fv": ("2",), "user_profile_fv": ("1", "2")}
    assert online_write_plan(store, "uplift_v2", both).retired == ()
    only_v2 = {"user_activity_v2_fv": ("2",), "user_profile_fv": ("2",)}
    plan = online_write_plan(store, "uplift_v2", only_v2)
    assert (plan.write, plan.retired, plan.missing) == (("user_activity_v2_fv", "user_profile_fv"), ("user_activity_fv",), ())
    # the current service's views are written even before any model pins them (the next challenger trains on them)
    nobody = online_write_plan(store, "uplift_v2", {})
    assert (nobody.write, nobody.retired) == (("user_activity_v2_fv", "user_profile_fv"), ("user_activity_fv",))
    # a pinned view the registry lost cannot be written: it is reported, not silently dropped
    lost = online_write_plan(store, "uplift_v2", {**only_v2, "user_activity_v7_fv": ("5",)})
    assert lost.missing == ("user_activity_v7_fv",) and lost.write == ("user_activity_v2_fv", "user_profile_fv")
    assert lost.metadata() == {
        "views_written": ["user_activity_v2_fv", "user_profile_fv"], "views_retired": ["user_activity_fv"],
        "views_missing": ["user_activity_v7_fv"],
        "view_users": {"user_activity_v2_fv": ["2"], "user_activity_v7_fv": ["5"], "user_profile_fv": ["2"]},
    }
    # views of other use cases (candidates_v1's user_embedding_fv) are neither written nor retired here
    assert "user_embedding_fv" not in nobody.write + nobody.retired
