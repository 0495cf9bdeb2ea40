"""Online store: apply the Feast definitions and materialize the latest feature values into Redis."""

import time

import dagster as dg
import pandas as pd
from feast import FeatureStore

from dagster_project.resources import DataLakeResource, FeastResource, MlflowResource, RedisResource
from dagster_project.resources.data_lake import USER_ACTIVITY, USER_PROFILE
from feature_repo.definitions import UPLIFT_FEATURE_SERVICE
from feature_repo.offline_engine import materialize
from feature_repo.versions import OnlineWritePlan, online_write_plan
from training.lifecycle import view_users


@dg.asset(group_name="online_store")
def feast_registry(feast: FeastResource) -> dg.MaterializeResult:
    """`feast apply`: register entities, sources, feature views and the feature services (uplift, candidates)."""
    store = feast.store()
    repo = feast.repo()
    store.apply(repo.objects())
    return dg.MaterializeResult(
        metadata={
            "feature_views": [fv.name for fv in store.list_feature_views()],
            "feature_services": [fs.name for fs in store.list_feature_services()],
        }
    )


def uplift_views_to_write(
    context: dg.AssetExecutionContext, store: FeatureStore, mlflow: MlflowResource
) -> OnlineWritePlan:
    """The uplift views to materialize: the current feature service's, plus every view version a live model pins
    (dual write); views of older uplift services that nothing reads any more are retired (no longer written)."""
    plan = online_write_plan(store, UPLIFT_FEATURE_SERVICE, view_users(mlflow.tracking_uri, mlflow.model_name))
    context.log.info("writing views %s; retired (no live model pins them) %s", list(plan.write), list(plan.retired))
    if plan.missing:
        # Serving refuses these models already; the other views still need their fresh rows.
        context.log.error(
            "views %s are pinned by live models (%s) but not in the Feast registry: they cannot be written; keep "
            "them in feature_repo/definitions.py until no model uses them",
            list(plan.missing), {view: list(plan.users[view]) for view in plan.missing},
        )
    return plan


@dg.asset(deps=["feast_registry", "user_activity_features", "user_profile_features"], group_name="online_store")
def online_features(
    context: dg.AssetExecutionContext, feast: FeastResource, redis: RedisResource, lake: DataLakeResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """`feast materialize` of the uplift views in use through `fast_materialize` (its read on the configured offline
    engine): latest value per user into Redis."""
    client = redis.client()  # fail fast with a clear message before Feast's own retries
    store = feast.store()
    # Only uplift views: other views (user_embedding_fv) have their own tables, windows and assets.
    plan = uplift_views_to_write(context, store, mlflow)
    views = list(plan.write)
    activity_ts = lake.read(USER_ACTIVITY, columns=["user_id", "event_timestamp"])
    profile_ts = lake.read(USER_PROFILE, columns=["user_id", "event_timestamp"])
    start = min(activity_ts["event_timestamp"].min(), profile_ts["event_timestamp"].min())
    end = activity_ts["event_timestamp"].max()
    # The window ends at the newest snapshot (inclusive), so serving sees the same row a point-in-time join at
    # `end` would pick. newer_or_equal, like `store.materialize`, never replaces a row the streaming updater wrote
    # with a newer event time (and, unlike it, rewrites an equal one: same data, same bytes).
    began = time.perf_counter()
    done = materialize(
        store, views, start.to_pydatetime(), (end + pd.Timedelta(seconds=1)).to_pydatetime(), feast.settings(),
        mode="newer_or_equal", log=context.log.info,
    )
    written = {m.view: m.rows for m in done}
    seconds = time.perf_counter() - began
    users = int(pd.concat([activity_ts["user_id"], profile_ts["user_id"]]).nunique())
    rows = sum(written.values())
    context.log.info("materialized %d users (window %s .. %s): %d rows in %.2f s", users, start, end, rows, seconds)
    return dg.MaterializeResult(
        metadata={
            "users_materialized": users,
            "as_of": str(end),
            "redis_keys": int(client.dbsize()),
            "rows_written": written,
            "rows_per_s": round(rows / seconds, 1) if seconds > 0 else 0.0,
            "seconds": round(seconds, 3),
            **plan.metadata(),
        }
    )
