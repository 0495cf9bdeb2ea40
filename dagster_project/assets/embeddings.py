"""Embeddings: item and user vectors (E ≈ UᵀV) for candidate generation, refreshed by fold-in, served from Redis.

Full retrain (`item_user_embeddings`): ALS on every validated item event; user vectors go to the Feast table
`features/user_embedding.parquet` (one row per user), item vectors, their popularity (the item's column sum of the
interaction weights: the popular-items fallback and baseline) and their HNSW index are published as a new version
under `embeddings/items/` (`ItemIndex.publish`: a version folder, then the `CURRENT` pointer, atomically), which
the decision service's index watcher swaps in without dropping a request.

Refresh (`user_embeddings_refresh`), the rule: a user is *active* when they have a view, cart or purchase stamped
after the watermark of the last full train or refresh. Each active user's vector is re-solved from their whole
history against the item vectors of the last full train (fold-in: ALS's user step), and appended as a newer row;
Feast serves the newest row per user. Items first seen after the full train have no vector: their events are
counted and left out until the next full train. A refresh straight after a full train finds nobody to refresh.

Rows are stamped at the newest event they saw, and always later than every row already written (see
`feature_repo.embeddings.next_stamp`), so each write replaces what Redis holds.
"""

import json

import dagster as dg
import numpy as np
import pandas as pd

from dagster_project.resources import DataLakeResource, FeastResource, RedisResource
from dagster_project.resources.data_lake import EMBEDDING_MANIFEST, ITEM_INDEX_DIR, USER_EMBEDDING, VALIDATED_EVENTS
from feature_repo.embeddings import EMBEDDING_DIM, next_stamp, user_embedding_rows
from feature_repo.materialize import fast_materialize
from serving.decision.candidates import HnswParams, ItemIndex, recall_at_k
from training.embeddings import INTERACTION_WEIGHTS, ImplicitALS, active_users, fold_in_users, interaction_matrix

RECALL_K = 50
EVENT_COLUMNS = ["event_type", "ts", "user_id", "item_id"]


class EmbeddingConfig(dg.Config):
    """ALS hyper-parameters to override (unset: `ImplicitALS` defaults), the HNSW graph, and the recall sample."""

    regularization: float | None = None
    alpha: float | None = None
    iterations: int | None = None
    seed: int = 0
    hnsw_m: int = HnswParams.m
    hnsw_ef_construction: int = HnswParams.ef_construction
    hnsw_ef_search: int = HnswParams.ef_search
    recall_sample_users: int = 1000  # user vectors whose ANN top-50 is compared with exact search

    def model(self) -> ImplicitALS:
        """The ALS estimator with d = EMBEDDING_DIM and the overridden hyper-parameters."""
        names = ("regularization", "alpha", "iterations")
        overrides = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        return ImplicitALS(factors=EMBEDDING_DIM, random_state=self.seed, **overrides)

    def hnsw(self) -> HnswParams:
        """Parameters of the item index."""
        return HnswParams(m=self.hnsw_m, ef_construction=self.hnsw_ef_construction, ef_search=self.hnsw_ef_search)


def _item_event_watermark(events: pd.DataFrame) -> pd.Timestamp:
    return events.loc[events["event_type"].isin(list(INTERACTION_WEIGHTS)), "ts"].max()


def _newest_written(lake: DataLakeResource) -> pd.Timestamp | None:
    if not lake.path(USER_EMBEDDING).exists():
        return None
    return lake.read(USER_EMBEDDING, columns=["event_timestamp"])["event_timestamp"].max()


def _write_manifest(lake: DataLakeResource, manifest: dict) -> None:
    path = lake.path(EMBEDDING_MANIFEST)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json.tmp").write_text(json.dumps(manifest, indent=2))
    path.with_suffix(".json.tmp").replace(path)


def read_manifest(lake: DataLakeResource) -> dict:
    """Watermarks and ALS parameters of the last full train and refresh."""
    path = lake.path(EMBEDDING_MANIFEST)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; materialize item_user_embeddings (a full train) first")
    return json.loads(path.read_text())


@dg.asset(deps=["validated_events"], group_name="embeddings")
def item_user_embeddings(
    context: dg.AssetExecutionContext, config: EmbeddingConfig, lake: DataLakeResource
) -> dg.MaterializeResult:
    """Full retrain: ALS user and item vectors from all item events; user vectors for Feast, item index to the lake."""
    events = lake.read(VALIDATED_EVENTS, columns=EVENT_COLUMNS)
    interactions = interaction_matrix(events)
    if interactions.matrix.nnz == 0:
        raise ValueError(f"validated events hold no item events ({sorted(INTERACTION_WEIGHTS)}): nothing to learn from")
    model = config.model().fit(interactions.matrix)
    popularity = np.asarray(interactions.matrix.sum(axis=0), dtype=np.float64).ravel()
    index = ItemIndex.build(interactions.item_ids, model.item_factors_, config.hnsw(), popularity)
    index_dir = lake.path(ITEM_INDEX_DIR)
    index_version = index.publish(index_dir)
    watermark = _item_event_watermark(events)
    stamp = next_stamp(watermark, _newest_written(lake))
    path = lake.write(USER_EMBEDDING, user_embedding_rows(interactions.user_ids, model.user_factors_, stamp))
    params = model.get_params()
    _write_manifest(lake, {
        "trained_through": watermark.isoformat(), "refreshed_through": watermark.isoformat(),
        "stamp": stamp.isoformat(), "params": params,
        "users": len(interactions.user_ids), "items": len(interactions.item_ids),
    })
    rng = np.random.default_rng(config.seed)
    n_users = len(interactions.user_ids)
    sample = rng.choice(n_users, min(config.recall_sample_users, n_users), replace=False)
    recall = recall_at_k(index, model.user_factors_[sample], RECALL_K)
    context.log.info(
        "embeddings: %d users × %d items, d=%d, loss %.1f, ANN recall@%d %.4f",
        len(interactions.user_ids), len(interactions.item_ids), EMBEDDING_DIM, model.loss_[-1], RECALL_K, recall,
    )
    return dg.MaterializeResult(
        metadata={
            "users": len(interactions.user_ids),
            "items": len(interactions.item_ids),
            "dims": EMBEDDING_DIM,
            "interactions": int(interactions.matrix.nnz),
            "training_loss": float(model.loss_[-1]),
            "training_loss_first_iteration": float(model.loss_[0]),
            f"ann_recall_at_{RECALL_K}": recall,
            "recall_sample_users": len(sample),
            "params": dg.MetadataValue.json(params),
            "trained_through": watermark.isoformat(),
            "event_timestamp": stamp.isoformat(),
            "path": str(path),
            "index_path": str(index_dir),
            "index_version": index_version,
        }
    )


@dg.asset(deps=["item_user_embeddings", "validated_events"], group_name="embeddings")
def user_embeddings_refresh(context: dg.AssetExecutionContext, lake: DataLakeResource) -> dg.MaterializeResult:
    """Fold-in: new vectors for users active since the last train or refresh, against the fixed item vectors."""
    manifest = read_manifest(lake)
    since = pd.Timestamp(manifest["refreshed_through"])
    events = lake.read(VALIDATED_EVENTS, columns=EVENT_COLUMNS)
    users = active_users(events, since)
    metadata: dict[str, object] = {"since": since.isoformat(), "active_users": len(users)}
    if len(users) == 0:
        context.log.info("no user active since %s: nothing to refresh", since)
        return dg.MaterializeResult(metadata={**metadata, "users_refreshed": 0})
    index = ItemIndex.load(lake.path(ITEM_INDEX_DIR))
    params = manifest["params"]
    folded = fold_in_users(events, users, index.item_ids, index.vectors, params["regularization"], params["alpha"])
    if folded.events_on_unknown_items:
        context.log.warning(
            "%d item events on items without a vector were left out (%d users keep their previous vector); "
            "the next full train of item_user_embeddings learns those items",
            folded.events_on_unknown_items, folded.users_without_known_items,
        )
    table = lake.read(USER_EMBEDDING)
    watermark = _item_event_watermark(events)
    stamp = next_stamp(watermark, table["event_timestamp"].max())
    rows = user_embedding_rows(folded.user_ids, folded.vectors, stamp)
    path = lake.write(USER_EMBEDDING, pd.concat([table, rows], ignore_index=True))
    _write_manifest(lake, {**manifest, "refreshed_through": watermark.isoformat(), "stamp": stamp.isoformat()})
    context.log.info("refreshed %d of %d active users (since %s)", len(rows), len(users), since)
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "users_refreshed": len(rows),
            "events_on_unknown_items": folded.events_on_unknown_items,
            "users_without_known_items": folded.users_without_known_items,
            "refreshed_through": watermark.isoformat(),
            "event_timestamp": stamp.isoformat(),
            "path": str(path),
        }
    )


@dg.asset(deps=["feast_registry", "user_embeddings_refresh"], group_name="embeddings")
def online_user_embeddings(
    context: dg.AssetExecutionContext, feast: FeastResource, redis: RedisResource, lake: DataLakeResource
) -> dg.MaterializeResult:
    """Materialize user_embedding_fv: each user's newest vector, from parquet into Redis, in Feast's format
    (`feature_repo.materialize`, ~10x `feast materialize`; never replacing a newer row)."""
    redis.client()  # fail fast with a clear message before Feast's own retries
    stamps = lake.read(USER_EMBEDDING, columns=["user_id", "event_timestamp"])
    start, end = stamps["event_timestamp"].min(), stamps["event_timestamp"].max()
    view = feast.repo().user_embedding_fv.name
    fast_materialize(feast.store(), [view], start.to_pydatetime(), (end + pd.Timedelta(seconds=1)).to_pydatetime(),
                     mode="newer_or_equal")
    users = int(stamps["user_id"].nunique())
    context.log.info("materialized %d user vectors of %s (window %s .. %s)", users, view, start, end)
    return dg.MaterializeResult(metadata={"users_materialized": users, "as_of": str(end), "feature_view": view})
