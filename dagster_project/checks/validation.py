"""Validation checks: contracts hold on accepted events, and no event is dropped silently."""


import dagster as dg
import pandas as pd

from dagster_project.resources import DataLakeResource, LandingResource
from dagster_project.assets.validation import validation_counts
from dagster_project.resources.data_lake import VALIDATED_EVENTS
from feature_repo.expectations import run_suites


@dg.asset_check(asset="validated_events", blocking=True, description="Great Expectations suites of the contracts.")
def validated_events_conform(lake: DataLakeResource, landing: LandingResource) -> dg.AssetCheckResult:
    """Every accepted event passes the GE suite derived from its contract (blocks feature building if not)."""
    outcomes = run_suites(lake.read(VALIDATED_EVENTS), as_of=landing.end())
    return dg.AssetCheckResult(
        passed=all(o.success for o in outcomes),
        metadata={
            o.suite: dg.MetadataValue.json({"rows": o.rows, "success": o.success, "failed": o.failed})
            for o in outcomes
        },
    )


@dg.asset_check(asset="validated_events", blocking=True, description="Nothing is dropped silently.")
def events_accounted_for(lake: DataLakeResource) -> dg.AssetCheckResult:
    """Rows in = rows accepted + rows quarantined, for every arrival day on disk."""
    report = validation_counts(lake)
    broken = report.loc[report["events_in"] != report["accepted"] + report["quarantined"], "arrival_day"].tolist()
    return dg.AssetCheckResult(
        passed=not broken,
        metadata={
            "events_in": int(report["events_in"].sum()),
            "accepted": int(report["accepted"].sum()),
            "quarantined": int(report["quarantined"].sum()),
            "days": len(report),
            "days_not_accounted_for": dg.MetadataValue.json(broken),
        },
    )
