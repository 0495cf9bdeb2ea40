"""Dagster entry point: wiring only (`dagster dev -m dagster_project.definitions`)."""

from __future__ import annotations

import dagster as dg

from dagster_project.assets import features, ingestion, models, online_store, training, validation
from dagster_project.checks import promotion, validation as validation_checks
from dagster_project.jobs import hyperlift_job
from dagster_project.resources import resources_from_env


def build_definitions(resources: dict[str, object]) -> dg.Definitions:
    """All assets, checks and jobs bound to the given resources."""
    return dg.Definitions(
        assets=dg.load_assets_from_modules([ingestion, validation, features, online_store, training, models]),
        asset_checks=dg.load_asset_checks_from_modules([validation_checks, promotion]),
        jobs=[hyperlift_job],
        resources=resources,
    )


defs = build_definitions(resources_from_env())
