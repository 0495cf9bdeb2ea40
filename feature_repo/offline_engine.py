"""One entry point per heavy offline job, run by the engine the settings choose (HYPERLIFT_OFFLINE_ENGINE).

`pandas` (the default) is the single-process code (feature_repo/point_in_time.py, feature_repo/materialize.py,
feature_repo/event_time.py, feature_repo/transforms.py); `spark` runs the same rules on Spark
(feature_repo/spark_*.py) on HYPERLIFT_SPARK_MASTER. The Dagster assets call these functions and never ask which
engine is on; pyspark is imported only when the spark engine is chosen, so `make demo` and the default install
need neither pyspark nor Java.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import numpy as np
import pandas as pd
from feast import FeatureStore, FeatureView

from feature_repo import event_time, transforms
from feature_repo.contracts import ValidationResult
from feature_repo.event_time import Lateness
from feature_repo.materialize import ViewMaterialization, materialize_views
from feature_repo.online_writer import Mode, OnlineWriter
from feature_repo.point_in_time import point_in_time_join
from infra.settings import HyperliftSettings


def _spark(settings: HyperliftSettings):
    """The process's SparkSession on the configured master (a clear error when pyspark or Java is missing)."""
    try:
        from feature_repo.spark_session import spark_session
    except ImportError as error:
        raise RuntimeError(
            "HYPERLIFT_OFFLINE_ENGINE=spark needs pyspark: pip install 'hyperlift[spark]' (or unset the variable to "
            f"use the pandas engine): {error}"
        ) from error
    return spark_session(settings.spark_master)


def training_set_join(
    entity_df: pd.DataFrame,
    views: Sequence[FeatureView],
    store: FeatureStore,
    settings: HyperliftSettings,
    *,
    drop_like_file_store: bool = False,
) -> pd.DataFrame:
    """The point-in-time join of `feature_repo.point_in_time` on the configured engine (same rows and values)."""
    if settings.offline_engine == "spark":
        from feature_repo import spark_point_in_time

        return spark_point_in_time.point_in_time_join(
            entity_df, views, store, _spark(settings), drop_like_file_store=drop_like_file_store
        )
    return point_in_time_join(entity_df, views, store, drop_like_file_store=drop_like_file_store)


def materialize(
    store: FeatureStore,
    feature_views: list[str],
    start: datetime,
    end: datetime,
    settings: HyperliftSettings,
    mode: Mode = "bulk",
    writer: OnlineWriter | None = None,
    log: Callable[[str], None] | None = None,
) -> list[ViewMaterialization]:
    """`fast_materialize` of the named views with the latest rows read by the configured engine; same writer."""
    if settings.offline_engine == "spark":
        from feature_repo.spark_materialize import spark_materialize_views

        return spark_materialize_views(store, feature_views, start, end, _spark(settings), mode, writer, log)
    return materialize_views(store, feature_views, start, end, mode, writer=writer, log=log)


def partition_snapshots(
    tiles: pd.DataFrame, user_ids: np.ndarray, arrival_day: pd.Timestamp, lateness: Lateness,
    settings: HyperliftSettings, folds: pd.DataFrame | None = None,
) -> dict[pd.Timestamp, pd.DataFrame]:
    """`event_time.partition_snapshots` (the snapshot files arrival day P rewrites) on the configured engine; `folds`
    are the lake fold's running tiles (`feature_repo.lake_fold`)."""
    if settings.offline_engine == "spark":
        from feature_repo import spark_snapshots

        return spark_snapshots.partition_snapshots(_spark(settings), tiles, user_ids, arrival_day, lateness, folds)
    return event_time.partition_snapshots(tiles, user_ids, arrival_day, lateness, folds)


def validate_day(
    raw: pd.DataFrame, arrival_day: pd.Timestamp, lateness: Lateness, seen: pd.Index | None,
    settings: HyperliftSettings,
) -> ValidationResult:
    """`event_time.validate_arrivals` (one arrival day's raw rows against the ids of earlier days) on the configured
    engine: the same accepted and quarantined frames and rule counts."""
    if settings.offline_engine == "spark":
        from feature_repo import spark_validation

        return spark_validation.validate_arrivals(_spark(settings), raw, arrival_day, lateness, seen)
    return event_time.validate_arrivals(raw, arrival_day, lateness, seen)


def tiles_of_day(events: pd.DataFrame, settings: HyperliftSettings) -> pd.DataFrame:
    """`transforms.event_tiles` (one tile per user and event day of a day's accepted events) on the configured
    engine: the same frame."""
    if settings.offline_engine == "spark":
        from feature_repo import spark_tiles

        return spark_tiles.event_tiles(_spark(settings), events)
    return transforms.event_tiles(events)
