"""The embedding assets on a small shop: full retrain, fold-in refresh of active users, and the vectors in Redis."""

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from dagster_project.assets.embeddings import (
    RECALL_K,
    item_user_embeddings,
    online_user_embeddings,
    read_manifest,
    user_embeddings_refresh,
)
from dagster_project.assets.online_store import feast_registry
from dagster_project.resources import DataLakeResource, FeastResource, RedisResource
from dagster_project.resources.data_lake import ITEM_INDEX_DIR, USER_EMBEDDING, VALIDATED_EVENTS
from feature_repo.contracts import validate_events
from feature_repo.definitions import CANDIDATES_FEATURE_SERVICE
from feature_repo.embeddings import EMBEDDING_DIM, EMBEDDING_FEATURES, next_stamp, user_vectors
from serving.decision.candidates import ItemIndex, current_version, published_versions, user_vector
from serving.store.features import FeatureClient
from simulator import ShopConfig, build_shop, simulate_events
from training.embeddings import ImplicitALS, active_users, fold_in_users, interaction_matrix

SHOP = ShopConfig(n_users=300, n_items=60, n_days=5, seed=3)
FIRST_DAYS = pd.Timestamp(SHOP.start) + pd.Timedelta(days=3)  # the full train sees days 0-2, the refresh all 5
ITEM_EVENTS = ["page_view", "add_to_cart", "purchase"]


@pytest.fixture(scope="module")
def shop_events() -> pd.DataFrame:
    """Validated events of the small shop."""
    return validate_events(simulate_events(build_shop(SHOP)), pd.Timestamp(SHOP.end)).accepted


@pytest.fixture
def world(settings, redis_databases):
    """Resources on the test's own data folder and Redis database."""
    url = redis_databases.fresh()
    return {
        "lake": DataLakeResource(root=str(settings.data_dir)),
        "feast": FeastResource(redis_url=url, home=str(settings.home)),
        "redis": RedisResource(url=url),
    }


def run(assets: list, resources: dict) -> dg.ExecuteInProcessResult:
    result = dg.materialize(assets, resources=resources, instance=dg.DagsterInstance.ephemeral())
    assert result.success
    return result


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    (event,) = result.asset_materializations_for_node(asset)
    return {name: value.value for name, value in event.metadata.items()}


def newest_rows(lake: DataLakeResource) -> pd.DataFrame:
    table = lake.read(USER_EMBEDDING)
    return table.sort_values("event_timestamp").groupby("user_id").tail(1).set_index("user_id").sort_index()


def online_vectors(resources: dict, users: list[int]) -> np.ndarray:
    store = resources["feast"].store()
    online = store.get_online_features(
        features=store.get_feature_service(CANDIDATES_FEATURE_SERVICE), entity_rows=[{"user_id": u} for u in users]
    ).to_dict()
    return np.array([online[name] for name in EMBEDDING_FEATURES], dtype=np.float32).T


def test_full_retrain_writes_user_vectors_item_index_and_metadata(world, shop_events):
    lake = world["lake"]
    lake.write(VALIDATED_EVENTS, shop_events)
    meta = metadata(run([item_user_embeddings], world), "item_user_embeddings")

    interactions = interaction_matrix(shop_events)
    model = ImplicitALS().fit(interactions.matrix)  # the asset's defaults: EmbeddingConfig overrides nothing
    watermark = shop_events.loc[shop_events["event_type"].isin(ITEM_EVENTS), "ts"].max()
    assert meta["users"] == len(interactions.user_ids) == shop_events.loc[
        shop_events["event_type"].isin(ITEM_EVENTS), "user_id"].nunique()
    assert meta["items"] == len(interactions.item_ids) and meta["dims"] == EMBEDDING_DIM == 16
    assert meta["training_loss"] == pytest.approx(model.loss_[-1], rel=1e-9)
    assert meta["training_loss"] < meta["training_loss_first_iteration"]
    assert meta[f"ann_recall_at_{RECALL_K}"] >= 0.95 and meta["recall_sample_users"] == meta["users"]

    table = lake.read(USER_EMBEDDING)
    assert list(table["user_id"]) == list(interactions.user_ids)
    assert (table["event_timestamp"] == next_stamp(watermark, None)).all()
    np.testing.assert_allclose(user_vectors(table), model.user_factors_, rtol=1e-6, atol=1e-7)

    index = ItemIndex.load(lake.path(ITEM_INDEX_DIR))
    np.testing.assert_array_equal(index.item_ids, interactions.item_ids)
    np.testing.assert_allclose(index.vectors, model.item_factors_, rtol=1e-6, atol=1e-7)
    manifest = read_manifest(lake)
    assert manifest["trained_through"] == manifest["refreshed_through"] == watermark.isoformat()
    assert manifest["params"] == model.get_params()


def test_refresh_folds_in_active_users_and_redis_serves_each_users_newest_vector(world, shop_events):
    lake = world["lake"]
    first = shop_events[shop_events["ts"] < FIRST_DAYS]
    lake.write(VALIDATED_EVENTS, first)
    pipeline = [item_user_embeddings, user_embeddings_refresh, feast_registry, online_user_embeddings]
    result = run(pipeline, world)
    assert metadata(result, "user_embeddings_refresh")["users_refreshed"] == 0  # nobody is newer than the train
    trained = newest_rows(lake)
    users = [int(u) for u in trained.index[:40]]
    # parity: what Redis serves equals the offline row, through Feast and through the serving reader
    np.testing.assert_array_equal(online_vectors(world, users), user_vectors(trained.loc[users]))
    client = FeatureClient(world["feast"].store(), CANDIDATES_FEATURE_SERVICE)
    np.testing.assert_array_equal(user_vector(client, users[0]), user_vectors(trained.loc[[users[0]]])[0])
    assert user_vector(client, 10**9) is None

    # two more days arrive: the refresh job folds in the users active since the train
    lake.write(VALIDATED_EVENTS, shop_events)
    result = run([user_embeddings_refresh, online_user_embeddings], world)
    meta = metadata(result, "user_embeddings_refresh")
    watermark = first.loc[first["event_type"].isin(ITEM_EVENTS), "ts"].max()
    active = active_users(shop_events, watermark)
    index = ItemIndex.load(lake.path(ITEM_INDEX_DIR))
    params = read_manifest(lake)["params"]
    expected = fold_in_users(
        shop_events, active, index.item_ids, index.vectors, params["regularization"], params["alpha"]
    )
    assert meta["active_users"] == len(active) > 0 and meta["users_refreshed"] == len(expected.user_ids)
    assert meta["events_on_unknown_items"] == expected.events_on_unknown_items
    refreshed = newest_rows(lake)
    np.testing.assert_allclose(user_vectors(refreshed.loc[expected.user_ids]), expected.vectors, rtol=1e-6, atol=1e-7)
    quiet = [u for u in trained.index if u not in set(expected.user_ids)]
    pd.testing.assert_frame_equal(refreshed.loc[quiet], trained.loc[quiet])
    assert read_manifest(lake)["refreshed_through"] == shop_events.loc[
        shop_events["event_type"].isin(ITEM_EVENTS), "ts"].max().isoformat()
    sample = [int(u) for u in expected.user_ids[:20]] + quiet[:20]
    np.testing.assert_array_equal(online_vectors(world, sample), user_vectors(refreshed.loc[sample]))

    # nothing new: a second refresh changes nothing
    rows_before = len(lake.read(USER_EMBEDDING))
    assert metadata(run([user_embeddings_refresh], world), "user_embeddings_refresh")["users_refreshed"] == 0
    assert len(lake.read(USER_EMBEDDING)) == rows_before

    # a full retrain over the same events is stamped later, so Redis replaces the folded-in vectors too
    run([item_user_embeddings, online_user_embeddings], world)
    retrained = newest_rows(lake)
    assert len(lake.read(USER_EMBEDDING)) == len(retrained)
    assert retrained["event_timestamp"].min() > refreshed["event_timestamp"].max()
    np.testing.assert_array_equal(online_vectors(world, sample), user_vectors(retrained.loc[sample]))
    assert not np.allclose(user_vectors(retrained.loc[sample[:20]]), user_vectors(refreshed.loc[sample[:20]]))


def test_refresh_without_a_full_train_says_what_to_run(world):
    with pytest.raises(FileNotFoundError, match="materialize item_user_embeddings"):
        dg.materialize([user_embeddings_refresh], resources=world, instance=dg.DagsterInstance.ephemeral())


def test_each_full_retrain_publishes_a_new_index_version_with_item_popularity(world, shop_events):
    lake = world["lake"]
    lake.write(VALIDATED_EVENTS, shop_events)
    root = lake.path(ITEM_INDEX_DIR)
    versions = [metadata(run([item_user_embeddings], world), "item_user_embeddings")["index_version"] for _ in range(2)]
    assert versions[0] != versions[1] and current_version(root) == versions[1]
    assert published_versions(root) == versions  # oldest first; both kept (KEPT_VERSIONS = 3)
    index = ItemIndex.load(root)
    assert index.version == versions[1]
    interactions = interaction_matrix(shop_events)
    np.testing.assert_allclose(index.popularity, np.asarray(interactions.matrix.sum(axis=0)).ravel(), rtol=1e-12)
    top, _ = index.most_popular(3)
    assert list(top) == list(interactions.item_ids[np.argsort(-index.popularity, kind="stable")[:3]])
