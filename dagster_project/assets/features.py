"""Features: daily user activity snapshots and CRM profile rows, the offline sources of the Feast views."""


import dagster as dg
import pandas as pd

from dagster_project.resources import DataLakeResource, ShopResource
from dagster_project.resources.data_lake import CUSTOMERS, USER_ACTIVITY, USER_PROFILE, VALIDATED_EVENTS
from feature_repo.transforms import SnapshotWindow, user_activity_snapshots, user_profile_rows


@dg.asset(deps=["validated_events", "customers"], group_name="features")
def user_activity_features(
    context: dg.AssetExecutionContext, lake: DataLakeResource, shop: ShopResource
) -> dg.MaterializeResult:
    """One activity snapshot per known user per day (recency, frequency, monetary, decayed activity, affinities)."""
    config = shop.config()
    events = lake.read(VALIDATED_EVENTS)
    users = lake.read(CUSTOMERS, columns=["user_id"])["user_id"].to_numpy()
    window = SnapshotWindow(start=pd.Timestamp(config.start), n_days=config.n_days)
    snapshots = user_activity_snapshots(events, users, window)
    path = lake.write(USER_ACTIVITY, snapshots)
    context.log.info("wrote %d activity snapshots (%d users × %d days)", len(snapshots), len(users), config.n_days)
    return dg.MaterializeResult(
        metadata={
            "rows": len(snapshots),
            "users": len(users),
            "last_snapshot": str(window.stamps()[-1]),
            "path": str(path),
        }
    )


@dg.asset(deps=["customers"], group_name="features")
def user_profile_features(lake: DataLakeResource) -> dg.MaterializeResult:
    """Profile features (region, device, marketing consent) stamped at sign-up."""
    rows = user_profile_rows(lake.read(CUSTOMERS))
    return dg.MaterializeResult(metadata={"rows": len(rows), "path": str(lake.write(USER_PROFILE, rows))})
