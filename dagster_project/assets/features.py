"""Features: daily user activity snapshots (with revisions for late events) and CRM profile rows, the offline
sources of the Feast views."""


from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from dagster_project.partitions import ARRIVAL_DAYS, SINGLE_RUN
from dagster_project.resources import DataLakeResource, EventTimeResource
from dagster_project.resources.data_lake import ACTIVITY_TILES, CUSTOMERS, USER_ACTIVITY, USER_PROFILE, VALIDATED_EVENTS
from feature_repo.lake_fold import read_lake_fold
from feature_repo.offline_engine import partition_snapshots, tiles_of_day
from feature_repo.pseudonyms import pseudonymize, pseudonymize_ids
from feature_repo.transforms import merge_tiles, user_profile_rows
from infra.settings import HyperliftSettings

FIRST_STAMP = pd.Timestamp(ARRIVAL_DAYS.start)


@dg.asset(
    deps=["validated_events", "customers"], partitions_def=ARRIVAL_DAYS, backfill_policy=SINGLE_RUN,
    group_name="features",
)
def user_activity_features(
    context: dg.AssetExecutionContext, lake: DataLakeResource, event_time: EventTimeResource
) -> dg.MaterializeResult:
    """Per arrival day P, in day order: the tiles of the day's accepted events, then the snapshots stamped
    P − lateness + 1 … P + 1 of every known user (the new one, and the earlier ones late events may change)."""
    lateness = event_time.lateness()
    keys = sorted(context.partition_keys)
    # Every customer by lake id (the pseudonym), sorted: snapshot files list users in that order.
    users = np.unique(pseudonymize_ids(lake.read(CUSTOMERS, columns=["user_id"])["user_id"], lake.pseudonymizer()))
    engine = HyperliftSettings()  # HYPERLIFT_OFFLINE_ENGINE: snapshots single-process (pandas) or on Spark
    fold = read_lake_fold(Path(lake.root))  # the running tiles of the days retention deleted
    folded = [k for k in keys if fold.covers(k)]
    if folded:
        raise ValueError(f"arrival days {folded[:3]} are in the lake fold through {fold.through} (retention deleted "
                         "their tiles after folding them): re-running them would count their events twice; run only "
                         f"arrival days after {fold.through}")
    others = [k for k in lake.partition_keys(ACTIVITY_TILES) if k not in set(keys) and not fold.covers(k)]
    tiles = fold.tiles_with(lake.read_partitions(ACTIVITY_TILES, others)) if others else fold.tiles_with()
    written, revised = 0, 0
    for key in keys:
        day_tiles = tiles_of_day(lake.read_partitions(VALIDATED_EVENTS, [key]), engine)
        lake.write_partition(ACTIVITY_TILES, key, day_tiles)
        tiles = merge_tiles(tiles, day_tiles)
        for stamp, rows in partition_snapshots(tiles, users, pd.Timestamp(key), lateness, engine,
                                               fold.folds).items():
            if stamp <= FIRST_STAMP:  # covers nothing: no event arrives before the first arrival day
                continue
            stamp_key = stamp.strftime("%Y-%m-%d")
            revised += _changed_rows(lake, stamp_key, rows)
            lake.write_partition(USER_ACTIVITY, stamp_key, rows)
            written += len(rows)
    context.log.info("wrote %d activity rows for %d users over %d arrival days; %d rows revised by late events",
                     written, len(users), len(keys), revised)
    return dg.MaterializeResult(
        metadata={"rows_written": written, "rows_revised": revised, "users": len(users), "days": len(keys),
                  "last_snapshot": str(pd.Timestamp(keys[-1], tz="UTC") + pd.Timedelta(days=1))}
    )


def _changed_rows(lake: DataLakeResource, stamp_key: str, rows: pd.DataFrame) -> int:
    """Rows of a snapshot file that a rewrite changes (0 for a new file): how much late events moved features."""
    if stamp_key not in lake.partition_keys(USER_ACTIVITY):
        return 0
    before = lake.read_partitions(USER_ACTIVITY, [stamp_key])
    if len(before) != len(rows) or not before["user_id"].equals(rows["user_id"]):
        return len(rows)
    features = [c for c in rows.columns if c not in ("user_id", "event_timestamp")]
    return int((before[features].to_numpy() != rows[features].to_numpy()).any(axis=1).sum())


@dg.asset(deps=["customers"], group_name="features")
def user_profile_features(lake: DataLakeResource) -> dg.MaterializeResult:
    """Profile features (region, device, marketing consent) stamped at sign-up, keyed by the users' pseudonyms."""
    rows = user_profile_rows(pseudonymize(lake.read(CUSTOMERS), lake.pseudonymizer()))
    return dg.MaterializeResult(metadata={"rows": len(rows), "path": str(lake.write(USER_PROFILE, rows))})
