"""fast_materialize against `FeatureStore.materialize` on the same data: the same Redis bytes, the same online reads,
the same latest rows as Feast's offline pull, and the registry's materialization intervals."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis
from feast import FeatureView, Field, FileSource
from feast.feature_view import FeatureViewState
from feast.types import Float64, Int64

from feature_repo.definitions import build_repo
from feature_repo.embeddings import EMBEDDING_FEATURES
from feature_repo.materialize import fast_materialize, read_latest_feast, read_latest_pyarrow
from feature_repo.online_writer import OnlineWriter
from feature_repo.store import feature_store
from feature_repo.transforms import ACTIVITY_FEATURES, PROFILE_FEATURES
from infra.settings import HyperliftSettings

START = pd.Timestamp("2026-11-01", tz="UTC")
END = pd.Timestamp("2026-11-04", tz="UTC")
USERS = 40
DOUBLE_TABLE = "features/double.parquet"
VIEWS = ["user_activity_fv", "user_profile_fv", "user_embedding_fv", "double_fv"]


def double_view(repo, data_dir) -> FeatureView:
    """A test-only view with Float64 and Int64 features and a created-timestamp column (ties broken by it)."""
    source = FileSource(
        name="double_source", path=str(data_dir / DOUBLE_TABLE), timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
    return FeatureView(
        name="double_fv", entities=[repo.user], ttl=timedelta(0), source=source, online=True,
        schema=[Field(name="price", dtype=Float64), Field(name="count", dtype=Int64)],
    )


def stamps(rng: np.random.Generator, n: int) -> pd.Series:
    """Event times in and around [START, END]: some before, some after, some exactly on either end."""
    offsets = rng.integers(-2 * 86400, 5 * 86400, n) * 10**6 + rng.integers(0, 10**6, n)
    out = pd.Series(START + pd.to_timedelta(offsets, unit="us"))
    out.iloc[:3] = [START, END, END + pd.Timedelta(microseconds=1)]
    return out


def tables(seed: int = 3) -> dict[str, pd.DataFrame]:
    """Source rows of every view of the test repo: several rows per user, nulls in every feature column, and a
    `created` time per row (kept only where the view's source declares a created-timestamp column)."""
    rng = np.random.default_rng(seed)
    n = USERS * 4
    users = rng.integers(0, USERS, n).astype(np.int64)

    def base() -> pd.DataFrame:
        frame = pd.DataFrame({"user_id": users, "event_timestamp": stamps(rng, n)})
        frame["created"] = pd.Series(START + pd.to_timedelta(rng.permutation(n), unit="s"))
        return frame

    def floats(frame: pd.DataFrame, names) -> pd.DataFrame:
        for name in names:
            values = rng.standard_normal(n).astype(np.float32)
            values[rng.random(n) < 0.15] = np.nan
            frame[name] = values
        return frame

    activity, embedding = floats(base(), ACTIVITY_FEATURES), floats(base(), EMBEDDING_FEATURES)
    profile = base()
    for name in PROFILE_FEATURES:
        profile[name] = pd.array(np.where(rng.random(n) < 0.15, None, rng.integers(-3, 2**40, n)), dtype="Int64")
    double = base()
    # a third of the rows repeat another row's user and event time: the created timestamp decides
    twins = rng.random(n) < 0.3
    double.loc[twins, "event_timestamp"] = double["event_timestamp"].iloc[0]
    double.loc[twins, "user_id"] = users[0]
    double["price"] = np.where(rng.random(n) < 0.15, np.nan, rng.standard_normal(n) * 1e6)
    double["count"] = pd.array(np.where(rng.random(n) < 0.15, None, rng.integers(-(2**50), 2**50, n)), dtype="Int64")
    return {"user_activity_fv": activity, "user_profile_fv": profile, "user_embedding_fv": embedding, "double_fv": double}


def source_frame(view: FeatureView, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows as the view's source holds them: `created` renamed to its created-timestamp column, or dropped."""
    created = view.batch_source.created_timestamp_column
    return frame.rename(columns={"created": created}) if created else frame.drop(columns=["created"])


def write_source(view: FeatureView, frame: pd.DataFrame) -> None:
    """Write a view's source: one parquet file, or two files in a folder when the source path is a folder."""
    path = Path(view.batch_source.path)
    frame = source_frame(view, frame)
    if path.suffix == ".parquet":
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
        return
    path.mkdir(parents=True, exist_ok=True)
    half = len(frame) // 2
    frame.iloc[:half].to_parquet(path / "part-0.parquet", index=False)
    frame.iloc[half:].to_parquet(path / "part-1.parquet", index=False)


def repo_views(settings) -> tuple[list, dict[str, FeatureView]]:
    """Objects to apply (the project's repo + the test's Float64 view) and the views by name."""
    repo = build_repo(settings.data_dir)
    double = double_view(repo, settings.data_dir)
    views = {v.name: v for v in (repo.user_activity_fv, repo.user_profile_fv, repo.user_embedding_fv, double)}
    return [*repo.objects(), double.batch_source, double], views


def expected_latest(settings) -> dict[str, pd.DataFrame]:
    """Per view, the latest row per user in the window, computed independently of Feast and of our reader."""
    _, views = repo_views(settings)
    created = {name: "created" if view.batch_source.created_timestamp_column else None for name, view in views.items()}
    return {name: latest_in_window(frame, created[name]) for name, frame in tables().items()}


@pytest.fixture
def pair(settings, redis_databases, tmp_path):
    """(Feast's store, our store): one set of parquet sources, two registries, two flushed Redis databases."""
    objects, views = repo_views(settings)
    for name, frame in tables().items():
        write_source(views[name], frame)
    other = HyperliftSettings(home=tmp_path / "fast", reports_dir=tmp_path / "fast" / "reports")
    urls = [redis_databases.fresh(), redis_databases.fresh()]
    stores = [feature_store(urls[0], settings), feature_store(urls[1], other)]
    for store in stores:
        store.apply(objects)
    clients = [redis.Redis.from_url(url) for url in urls]
    yield stores, clients
    for client in clients:
        client.close()


def dump(client: redis.Redis) -> dict[bytes, dict[bytes, bytes]]:
    return {key: client.hgetall(key) for key in client.keys()}


def online(store, view: str) -> tuple[dict, dict]:
    """Values and event timestamps (seconds, nanos) of every user of the test, through get_online_features."""
    features = [f"{view}:{f.name}" for f in store.get_feature_view(view).features]
    response = store.get_online_features(features=features, entity_rows=[{"user_id": u} for u in range(USERS)])
    names = list(response.proto.metadata.feature_names.val)
    times = {
        name: [(t.seconds, t.nanos) for t in response.proto.results[names.index(name)].event_timestamps]
        for name in names if name != "user_id"
    }
    return response.to_dict(), times


def latest_in_window(frame: pd.DataFrame, created: str | None = None) -> pd.DataFrame:
    """The expected rows, computed independently: in [START, END], newest event time (then created) per user."""
    inside = frame[(frame["event_timestamp"] >= START) & (frame["event_timestamp"] <= END)]
    order = ["event_timestamp", *([created] if created else [])]
    return inside.sort_values(order, kind="stable").drop_duplicates("user_id", keep="last").set_index("user_id")


def test_fast_materialize_writes_what_feast_materialize_writes(pair, settings):
    (feast_store, fast_store), (feast_client, fast_client) = pair
    feast_store.materialize(START.to_pydatetime(), END.to_pydatetime(), feature_views=VIEWS)
    counts = fast_materialize(fast_store, VIEWS, START.to_pydatetime(), END.to_pydatetime())
    expected = expected_latest(settings)
    assert counts == {name: len(frame) for name, frame in expected.items()}
    assert 0 < min(counts.values()) and max(counts.values()) < USERS  # some users have no row in the window
    assert dump(fast_client) == dump(feast_client)  # byte for byte, every key, field and timestamp
    for view in VIEWS:
        assert online(fast_store, view) == online(feast_store, view), view


def test_online_values_are_the_latest_rows_in_the_window(pair, settings):
    (_, store), _ = pair
    fast_materialize(store, VIEWS, START.to_pydatetime(), END.to_pydatetime())
    float32_views = ("user_activity_fv", "user_embedding_fv")
    for view, expected in expected_latest(settings).items():
        columns = [f.name for f in store.get_feature_view(view).features]
        values, times = online(store, view)
        for name in columns:
            want = [None if u not in expected.index or pd.isna(v := expected.at[u, name]) else v for u in range(USERS)]
            got = values[name]
            assert [g is None for g in got] == [w is None for w in want], (view, name)
            assert [g for g in got if g is not None] == [
                float(np.float32(w)) if view in float32_views else w for w in want if w is not None
            ], (view, name)
        micros = [(int(t.value // 1000 // 10**6), int(t.value // 1000 % 10**6 * 1000)) for t in expected["event_timestamp"]]
        assert [times[columns[0]][u] for u in expected.index] == micros, view


def test_pyarrow_reader_equals_feasts_offline_pull(pair):
    (store, _), _ = pair
    for view_name in VIEWS:
        view = store.get_feature_view(view_name)
        ours = read_latest_pyarrow(store, view, START.to_pydatetime(), END.to_pydatetime())
        feast = read_latest_feast(store, view, START.to_pydatetime(), END.to_pydatetime())
        ours = ours.sort_values("user_id").reset_index(drop=True)
        feast = feast[ours.columns].sort_values("user_id").reset_index(drop=True)
        assert len(ours) > 0
        pd.testing.assert_frame_equal(ours, feast, check_exact=True, check_dtype=False)


def test_registry_records_the_interval_and_incremental_continues_from_it(pair):
    (feast_store, fast_store), _ = pair
    feast_store.materialize(START.to_pydatetime(), END.to_pydatetime(), feature_views=VIEWS)
    fast_materialize(fast_store, VIEWS, START.to_pydatetime(), END.to_pydatetime())
    for view in VIEWS:
        ours, theirs = fast_store.get_feature_view(view), feast_store.get_feature_view(view)
        assert ours.materialization_intervals == [(START.to_pydatetime(), END.to_pydatetime())]
        assert ours.materialization_intervals == theirs.materialization_intervals
        assert ours.state == theirs.state
    later = END + pd.Timedelta(days=1)
    fast_store.materialize_incremental(later.to_pydatetime(), feature_views=["user_profile_fv"])
    assert fast_store.get_feature_view("user_profile_fv").materialization_intervals == [
        (START.to_pydatetime(), END.to_pydatetime()), (END.to_pydatetime(), later.to_pydatetime())
    ]


def test_newer_or_equal_materialization_keeps_newer_streamed_rows(pair, settings):
    (_, store), _ = pair
    newer = END + pd.Timedelta(hours=1)
    expected = expected_latest(settings)["user_profile_fv"]
    streamed = pd.DataFrame({
        "user_id": np.array([int(expected.index[0])], dtype=np.int64),
        "event_timestamp": [newer], "region_code": [7], "is_mobile": [8], "consent_marketing": [9],
    })
    user = int(streamed["user_id"].iloc[0])
    OnlineWriter(store).write("user_profile_fv", streamed)
    counts = fast_materialize(store, ["user_profile_fv"], START.to_pydatetime(), END.to_pydatetime(), mode="newer_or_equal")
    assert counts["user_profile_fv"] == len(expected) - 1  # all but the streamed user
    row = store.get_online_features(
        features=[f"user_profile_fv:{n}" for n in PROFILE_FEATURES], entity_rows=[{"user_id": user}]
    ).to_dict()
    assert row == {"user_id": [user], "region_code": [7], "is_mobile": [8], "consent_marketing": [9]}


def test_a_failed_write_restores_the_view_state_and_records_no_interval(pair, monkeypatch):
    (_, store), _ = pair
    before = store.get_feature_view("user_profile_fv")

    def refuse(*args, **kwargs):
        raise ConnectionError("redis went away")

    monkeypatch.setattr(OnlineWriter, "write", refuse)
    with pytest.raises(ConnectionError, match="redis went away"):
        fast_materialize(store, ["user_profile_fv"], START.to_pydatetime(), END.to_pydatetime())
    after = store.get_feature_view("user_profile_fv")
    assert after.materialization_intervals == []
    assert after.state == before.state != FeatureViewState.MATERIALIZING
