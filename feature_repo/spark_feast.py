"""Feast's own Spark offline store, for users who query historical features through Feast (`get_historical_features`).

The project's training set does not go through it (feature_repo/offline_engine.py runs the project's join); this
module gives the configuration Feast 0.67 accepts, tested in tests/feature_repo/test_spark_feast.py:

- `offline_store: {type: spark, spark_conf: {...}}` in feature_store.yaml (`spark_offline_store`);
- every view's batch source a `SparkSource` (`spark_repo_objects`): Feast's Spark store refuses FileSources
  ("SparkOfflineStore requires SparkSource or IcebergSource"), so the same parquet paths are declared again as
  SparkSources, with the same names, schemas, TTLs and feature services;
- parquet timestamps in microseconds. pandas writes TIMESTAMP(NANOS), which Spark cannot read as a timestamp: in a
  session Feast starts itself, Spark fails with "[PARQUET_TYPE_ILLEGAL] Illegal Parquet type: INT64
  (TIMESTAMP(NANOS,true))" (Feast reports it as DataSourceNotFoundException, "Unable to find table at ..."); in the
  offline engine's session (`spark.sql.legacy.parquet.nanosAsLong`) the column is int64 and Feast's SQL refuses
  "(event_timestamp <= entity_timestamp)": BIGINT against TIMESTAMP. The lake keeps nanoseconds (the project's
  join compares them exactly), so tables meant for Feast's Spark store are written with `to_parquet(...,
  coerce_timestamps="us")` (`write_for_spark`); the lake's own writer would have to do the same for Feast's Spark
  store to read the lake in place.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

import pandas as pd
import yaml
from feast import FeatureService, FeatureStore, FeatureView
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.repo_config import RepoConfig

from feature_repo.definitions import FeatureRepo
from feature_repo.store import REPO_PATH
from infra.settings import HyperliftSettings


def spark_offline_store(master: str) -> dict:
    """The `offline_store` block of feature_store.yaml for Feast's Spark store on `master` (UTC, no UI)."""
    return {
        "type": "spark",
        "spark_conf": {
            "spark.master": master,
            "spark.sql.session.timeZone": "UTC",
            "spark.ui.enabled": "false",
            "spark.sql.execution.arrow.pyspark.enabled": "true",
        },
    }


def spark_source(view: FeatureView) -> SparkSource:
    """The view's parquet FileSource declared as a SparkSource (same name, path, timestamp and created columns)."""
    source = view.batch_source
    return SparkSource(
        name=source.name, path=source.path, file_format="parquet", timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column or None, description=source.description,
    )


def spark_repo_objects(repo: FeatureRepo) -> list[object]:
    """The uplift views and feature service of `repo` on SparkSources, ready for `FeatureStore.apply`."""
    views = [repo.user_activity_fv, repo.user_profile_fv]
    sources = [spark_source(view) for view in views]
    spark_views = [
        FeatureView(name=view.name, entities=[repo.user], ttl=view.ttl, schema=list(view.features), source=source,
                    online=view.online, tags=view.tags, description=view.description)
        for view, source in zip(views, sources, strict=True)
    ]
    service = FeatureService(name=repo.uplift_v1.name, features=spark_views, description=repo.uplift_v1.description)
    return [repo.user, *sources, *spark_views, service]


def feast_spark_store(redis_url: str, settings: HyperliftSettings) -> FeatureStore:
    """The project's feature_store.yaml with Feast's Spark offline store on HYPERLIFT_SPARK_MASTER."""
    settings.feast_registry_path.parent.mkdir(parents=True, exist_ok=True)
    text = Template((REPO_PATH / "feature_store.yaml").read_text()).substitute(settings.environment(redis_url))
    raw = yaml.safe_load(text) | {"offline_store": spark_offline_store(settings.spark_master)}
    config = RepoConfig(**raw)
    config.repo_path = REPO_PATH
    return FeatureStore(repo_path=str(REPO_PATH), config=config)


def write_for_spark(frame: pd.DataFrame, path: Path) -> None:
    """Write a table where Feast's Spark store can read it: timestamps as parquet microseconds (module doc)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False, coerce_timestamps="us", allow_truncated_timestamps=False)
