"""Stream state: the batch's tiles and recently accepted event ids in Redis, where `POST /v1/events` continues."""

from pathlib import Path

import dagster as dg

from dagster_project.resources import DataLakeResource, EventTimeResource, RedisResource
from dagster_project.resources.data_lake import ACTIVITY_TILES, VALIDATED_EVENTS
from feature_repo.lake_fold import read_lake_fold
from feature_repo.stream import remember_events, seen_ttl_s, write_tiles


@dg.asset(deps=["user_activity_features"], group_name="online_store")
def online_tiles(
    context: dg.AssetExecutionContext, lake: DataLakeResource, redis: RedisResource, event_time: EventTimeResource
) -> dg.MaterializeResult:
    """Every user's tiles into Redis (replacing what was there) and the ids of the events accepted in the last
    `lateness` + 1 arrival days, so streamed events add to the batch's state and a replayed batch event is
    recognised. Users' days that retention deleted from the lake come from the lake fold (their running tiles).
    Run it while no events are being streamed for those days (the stream's newer writes would be
    replaced by the batch's state)."""
    client = redis.client()
    lateness = event_time.lateness()
    keys = lake.partition_keys(ACTIVITY_TILES)
    fold = read_lake_fold(Path(lake.root))
    unfolded = [k for k in keys if not fold.covers(k)]  # a partition left by a retention run cut short is in the fold
    tiles = fold.tiles_with(lake.read_partitions(ACTIVITY_TILES, unfolded)) if unfolded else fold.tiles_with()
    users = write_tiles(client, tiles, folds=fold.folds)
    recent = lake.partition_keys(VALIDATED_EVENTS)[-(lateness.allowed_days + 1):]
    remembered = remember_events(client, lake.read_partitions(VALIDATED_EVENTS, recent, ["user_id", "event_id"]),
                                 seen_ttl_s(lateness)) if recent else 0
    context.log.info("stream state: tiles of %d users, %d recent event ids", users, remembered)
    return dg.MaterializeResult(metadata={"users": users, "event_ids_remembered": remembered,
                                          "days_remembered": recent})
