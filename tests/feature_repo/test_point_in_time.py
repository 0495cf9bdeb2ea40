"""feature_repo.point_in_time against real Feast: the same rows, columns, dtypes and values as get_historical_features."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from string import Template

import numpy as np
import pandas as pd
import pytest
import yaml
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.repo_config import RepoConfig
from feast.types import Float32

from feature_repo.definitions import UPLIFT_FEATURE_SERVICE, build_repo
from feature_repo.point_in_time import point_in_time_join, service_views
from feature_repo.store import REPO_PATH, feature_store
from feature_repo.transforms import ACTIVITY_FEATURES, PROFILE_FEATURES

D = pd.Timestamp("2026-10-02", tz="UTC")
DAY, US = pd.Timedelta(days=1), pd.Timedelta(microseconds=1)
KEYS = ["user_id", "event_timestamp"]

# user 1: daily snapshots at D, D+1d, D+2d (TTL 2 d), signed up at D-3d; user 2: one snapshot at D+5d, signed up at
# D; user 3: a profile but no activity; user 99: nothing at all.
ACTIVITY_ROWS = [(1, D), (1, D + DAY), (1, D + 2 * DAY), (2, D + 5 * DAY)]
PROFILE_ROWS = [(1, D - 3 * DAY), (2, D), (3, D - DAY)]

# (name, user, time): what each entity row probes
CASES = [
    ("exactly at a snapshot", 1, D),
    ("1 us after a snapshot", 1, D + US),
    ("1 us before the next snapshot", 1, D + DAY - US),
    ("at the last snapshot", 1, D + 2 * DAY),
    ("exactly at the TTL edge", 1, D + 4 * DAY),
    ("1 us past the TTL edge", 1, D + 4 * DAY + US),
    ("before the user's first snapshot", 1, D - US),
    ("before any activity, after sign-up", 2, D + DAY),
    ("before sign-up and before any activity", 2, D - US),
    ("at the only snapshot", 2, D + 5 * DAY),
    ("profile only", 3, D + DAY),
    ("unknown user", 99, D + DAY),
]
# Rows Feast's file offline store drops (a view has rows for the user, none inside the window); nulls here.
FILE_STORE_DROPS = {
    "1 us past the TTL edge", "before the user's first snapshot", "before any activity, after sign-up",
    "before sign-up and before any activity",
}


def activity_value(row: int, feature: int) -> float:
    """Distinct value of one activity feature in source row `row`, so a wrong row pick shows."""
    return float(row * 100 + feature)


def profile_value(row: int, feature: int) -> int:
    return 1000 + row * 10 + feature


def write_source(source: FileSource, frame: pd.DataFrame) -> None:
    """Write `frame` where a view's FileSource reads it: the file, or one file in the folder; a declared created
    timestamp column is filled with the event timestamp (one revision per row)."""
    if source.created_timestamp_column and source.created_timestamp_column not in frame.columns:
        frame = frame.assign(**{source.created_timestamp_column: frame[source.timestamp_field]})
    path = Path(source.path)
    if path.suffix != ".parquet":
        path = path / "part-0.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)


@pytest.fixture
def store(settings, online_redis_url) -> FeatureStore:
    """The project's repo applied over small hand-made activity and profile tables."""
    activity = pd.DataFrame(ACTIVITY_ROWS, columns=KEYS)
    for f, name in enumerate(ACTIVITY_FEATURES):
        activity[name] = np.array([activity_value(r, f) for r in range(len(activity))], dtype=np.float32)
    profile = pd.DataFrame(PROFILE_ROWS, columns=KEYS)
    for f, name in enumerate(PROFILE_FEATURES):
        profile[name] = np.array([profile_value(r, f) for r in range(len(profile))], dtype=np.int64)
    repo = build_repo(settings.data_dir)
    write_source(repo.activity_source, activity)
    write_source(repo.profile_source, profile)
    store = feature_store(online_redis_url, settings)
    store.apply(repo.objects())
    return store


def entity_frame(cases: list[tuple[str, int, pd.Timestamp]]) -> pd.DataFrame:
    """Labelled entity rows as the training_set asset builds them."""
    return pd.DataFrame(
        {
            "user_id": np.array([user for _, user, _ in cases], dtype=np.int64),
            "event_timestamp": pd.to_datetime([ts for _, _, ts in cases], utc=True),
            "action_id": [name for name, _, _ in cases],
            "propensity": np.linspace(0.1, 0.9, len(cases)),
            "label_revenue": np.arange(len(cases), dtype=np.float64),
            "segment": pd.array(["a" if user % 2 else None for _, user, _ in cases], dtype="string"),
        }
    )


def feast_join(store: FeatureStore, entity_df: pd.DataFrame) -> pd.DataFrame:
    """What the training_set asset does today, rows in a stable order (Feast's own order is by feature time)."""
    joined = store.get_historical_features(
        entity_df=entity_df, features=store.get_feature_service(UPLIFT_FEATURE_SERVICE)
    ).to_df()
    return by_key(joined)


def by_key(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values([*KEYS, "action_id"], kind="stable").reset_index(drop=True)


def test_equals_feast_file_store_rows_columns_dtypes_and_values(store):
    entity_df = entity_frame(CASES)
    expected = feast_join(store, entity_df)
    actual = point_in_time_join(entity_df, service_views(store, UPLIFT_FEATURE_SERVICE), store, drop_like_file_store=True)
    assert set(expected["action_id"]) == {name for name, _, _ in CASES} - FILE_STORE_DROPS  # what Feast keeps
    pd.testing.assert_frame_equal(by_key(actual), expected, check_exact=True)


def test_keeps_every_entity_row_with_nulls_where_the_file_store_drops_it(store):
    entity_df = entity_frame(CASES)
    views = service_views(store, UPLIFT_FEATURE_SERVICE)
    actual = point_in_time_join(entity_df, views, store)
    pd.testing.assert_frame_equal(actual[entity_df.columns], entity_df)  # one row per entity row, in given order
    kept = by_key(actual[~actual["action_id"].isin(FILE_STORE_DROPS)])
    pd.testing.assert_frame_equal(kept, feast_join(store, entity_df), check_exact=True)
    got = actual.set_index("action_id")
    activity = got[list(ACTIVITY_FEATURES)].to_numpy(np.float64)
    expected_rows = {  # source row of user_activity_fv each case must get (None: null)
        "exactly at a snapshot": 0, "1 us after a snapshot": 0, "1 us before the next snapshot": 0,
        "at the last snapshot": 2, "exactly at the TTL edge": 2, "1 us past the TTL edge": None,
        "before the user's first snapshot": None, "before any activity, after sign-up": None,
        "before sign-up and before any activity": None, "at the only snapshot": 3, "profile only": None,
        "unknown user": None,
    }
    for i, name in enumerate(got.index):
        row = expected_rows[name]
        want = np.full(len(ACTIVITY_FEATURES), np.nan) if row is None else [activity_value(row, f) for f in range(19)]
        np.testing.assert_array_equal(activity[i], want, err_msg=name)
    profile = got[list(PROFILE_FEATURES)]
    assert profile.dtypes.tolist() == [np.float64] * 3  # Int64 with nulls becomes float64, as Feast returns it
    assert profile.loc["before sign-up and before any activity"].isna().all()
    assert profile.loc["before any activity, after sign-up"].tolist() == [profile_value(1, f) for f in range(3)]
    assert profile.loc["profile only"].tolist() == [profile_value(2, f) for f in range(3)]
    assert profile.loc["unknown user"].isna().all()


def test_duplicate_entity_rows_each_get_the_features_feast_returns_once(store):
    cases = [("first", 1, D + DAY + pd.Timedelta(hours=3)), ("second", 1, D + DAY + pd.Timedelta(hours=3))]
    entity_df = entity_frame(cases)
    feast_rows = feast_join(store, entity_df)
    actual = point_in_time_join(entity_df, service_views(store, UPLIFT_FEATURE_SERVICE), store)
    assert len(feast_rows) == 1  # Feast's file store keeps one row per (keys, timestamp); this join keeps both
    assert actual["action_id"].tolist() == ["first", "second"]
    features = [*ACTIVITY_FEATURES, *PROFILE_FEATURES]
    for i in range(2):
        pd.testing.assert_series_equal(actual.loc[i, features], feast_rows.loc[0, features], check_names=False)
    assert actual.loc[0, "page_views_total"] == activity_value(1, ACTIVITY_FEATURES.index("page_views_total"))


def test_equal_feature_timestamps_are_ordered_by_created_timestamp(settings, online_redis_url):
    rows = pd.DataFrame(
        {
            "user_id": np.array([1, 1, 1, 2, 2], dtype=np.int64),
            "event_timestamp": [D, D, D, D, D],
            "created": [D + 2 * DAY, D + 5 * DAY, D + DAY, pd.NaT, D],
            "score": np.array([1.0, 2.0, 3.0, 4.0, 5.0], dtype=np.float32),
        }
    )
    rows["created"] = pd.to_datetime(rows["created"], utc=True)
    path = settings.data_dir / "scores.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(path, index=False)
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    source = FileSource(name="scores", path=str(path), timestamp_field="event_timestamp", created_timestamp_column="created")
    view = FeatureView(name="scores_fv", entities=[user], ttl=timedelta(hours=1), schema=[Field(name="score", dtype=Float32)], source=source)
    store = feature_store(online_redis_url, settings)
    store.apply([user, source, view])
    entity_df = entity_frame([("one", 1, D + pd.Timedelta(minutes=5)), ("two", 2, D)])
    expected = by_key(store.get_historical_features(entity_df=entity_df, features=["scores_fv:score"]).to_df())
    actual = point_in_time_join(entity_df, [store.get_feature_view("scores_fv")], store)
    assert actual["score"].tolist() == [2.0, 5.0]  # newest created wins; a null created counts as the oldest
    pd.testing.assert_frame_equal(by_key(actual), expected, check_exact=True)


def test_rejects_entity_frames_it_cannot_join(store):
    views = service_views(store, UPLIFT_FEATURE_SERVICE)
    entity_df = entity_frame(CASES[:2])
    with pytest.raises(ValueError, match="no column 'user_id', the join key of user_activity_fv"):
        point_in_time_join(entity_df.drop(columns="user_id"), views, store)
    with pytest.raises(ValueError, match="needs a column named 'event_timestamp'"):
        point_in_time_join(entity_df.assign(t2=entity_df["event_timestamp"]).drop(columns="event_timestamp").assign(t3=D), views, store)
    with pytest.raises(ValueError, match="1 rows without a 'event_timestamp'"):
        point_in_time_join(entity_df.assign(event_timestamp=[D, pd.NaT]), views, store)


def duckdb_store(settings, redis_url: str) -> FeatureStore:
    """The project's store with Feast's DuckDB offline store in place of the file one (feature_store.yaml otherwise)."""
    text = Template((REPO_PATH / "feature_store.yaml").read_text()).substitute(settings.environment(redis_url))
    raw = yaml.safe_load(text) | {"offline_store": {"type": "duckdb"}}
    config = RepoConfig(**raw)
    config.repo_path = REPO_PATH
    return FeatureStore(repo_path=str(REPO_PATH), config=config)


def test_default_semantics_equal_feast_duckdb_store(store, settings, online_redis_url):
    pytest.importorskip("duckdb", reason="feast[duckdb] is not a dependency; see docs/benchmarks.md")
    duck = duckdb_store(settings, online_redis_url)
    # The DuckDB store returns extension dtypes (the string `segment`) as object: compare the columns it keeps typed.
    entity_df = entity_frame(CASES + [("dup", 1, D + US)]).drop(columns="segment")
    expected = by_key(
        duck.get_historical_features(entity_df=entity_df, features=duck.get_feature_service(UPLIFT_FEATURE_SERVICE)).to_df()
    )
    actual = point_in_time_join(entity_df, service_views(store, UPLIFT_FEATURE_SERVICE), store)
    assert len(expected) == len(entity_df)  # the DuckDB store keeps every entity row, as this join does
    pd.testing.assert_frame_equal(by_key(actual), expected, check_exact=True, check_dtype=False)
