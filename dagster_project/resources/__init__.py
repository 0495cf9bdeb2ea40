"""Resources, one per file, and the set the deployment uses (built from the environment)."""

from __future__ import annotations

import dagster as dg

from dagster_project.resources.data_lake import DataLakeResource
from dagster_project.resources.event_time import EventTimeResource
from dagster_project.resources.feast_store import FeastResource
from dagster_project.resources.landing import LandingResource
from dagster_project.resources.mlflow_registry import MlflowResource
from dagster_project.resources.redis_store import RedisResource
from dagster_project.resources.shop import ShopResource
from infra.keys import key_file
from infra.settings import HyperliftSettings
from simulator import ShopConfig


def build_resources(settings: HyperliftSettings, redis_url: str | dg.EnvVar, shop: ShopConfig) -> dict[str, object]:
    """The resources of one deployment: one data folder, one Redis, one MLflow store, one simulated shop."""
    return {
        "lake": DataLakeResource(root=str(settings.data_dir), keys_file=str(key_file(settings))),
        "redis": RedisResource(url=redis_url),
        "feast": FeastResource(redis_url=redis_url, home=str(settings.home)),
        "mlflow": MlflowResource(tracking_uri=settings.mlflow_uri, artifact_dir=str(settings.mlflow_artifacts_dir)),
        "shop": ShopResource.from_config(shop),
        "landing": LandingResource(path=str(settings.resolved_landing_dir), source=settings.landing_source,
                                   shop=ShopResource.from_config(shop)),
        "event_time": EventTimeResource(),
    }


def resources_from_env() -> dict[str, object]:
    """Resources configured from the environment (REDIS_URL is read when a run starts, not at load)."""
    return build_resources(HyperliftSettings(), dg.EnvVar("REDIS_URL"), ShopConfig.from_env())


__all__ = [
    "DataLakeResource", "EventTimeResource", "FeastResource", "LandingResource", "MlflowResource", "RedisResource", "ShopResource",
    "build_resources", "resources_from_env",
]
