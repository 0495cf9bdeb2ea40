"""One entry point per heavy offline job, run by the engine the settings choose (HYPERLIFT_OFFLINE_ENGINE).

`pandas` (the default) is the single-process code (feature_repo/point_in_time.py, feature_repo/materialize.py);
`spark` runs the same rules on Spark (feature_repo/spark_*.py) on HYPERLIFT_SPARK_MASTER. The Dagster assets call
these functions and never ask which engine is on; pyspark is imported only when the spark engine is chosen, so
`make demo` and the default install need neither pyspark nor Java.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import numpy as np
import pandas as pd
from feast import FeatureStore, FeatureView

from feature_repo import event_time
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
