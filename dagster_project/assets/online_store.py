"""Online store: apply the Feast definitions and materialize the latest feature values into Redis."""


import dagster as dg
import pandas as pd

from dagster_project.resources import DataLakeResource, FeastResource, RedisResource
from dagster_project.resources.data_lake import USER_ACTIVITY, USER_PROFILE


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


@dg.asset(deps=["feast_registry", "user_activity_features", "user_profile_features"], group_name="online_store")
def online_features(
    context: dg.AssetExecutionContext, feast: FeastResource, redis: RedisResource, lake: DataLakeResource
) -> dg.MaterializeResult:
    """`feast materialize`: latest value per user of the uplift_v1 feature views, from parquet into Redis."""
    client = redis.client()  # fail fast with a clear message before Feast's own retries
    store = feast.store()
    # Only the views of uplift_v1: other views (user_embedding_fv) have their own tables, windows and assets.
    views = [projection.name for projection in feast.repo().uplift_v1.feature_view_projections]
    activity_ts = lake.read(USER_ACTIVITY, columns=["user_id", "event_timestamp"])
    profile_ts = lake.read(USER_PROFILE, columns=["user_id", "event_timestamp"])
    start = min(activity_ts["event_timestamp"].min(), profile_ts["event_timestamp"].min())
    end = activity_ts["event_timestamp"].max()
    # The window ends at the newest snapshot (inclusive), so serving sees the same row a point-in-time join at
    # `end` would pick.
    store.materialize(
        start_date=start.to_pydatetime(), end_date=(end + pd.Timedelta(seconds=1)).to_pydatetime(), feature_views=views
    )
    users = int(pd.concat([activity_ts["user_id"], profile_ts["user_id"]]).nunique())
    context.log.info("materialized %d users (window %s .. %s)", users, start, end)
    return dg.MaterializeResult(
        metadata={"users_materialized": users, "as_of": str(end), "redis_keys": int(client.dbsize())}
    )
