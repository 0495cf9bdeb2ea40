"""Validation checks: contracts hold on accepted events, and no event is dropped silently."""


import dagster as dg
import pandas as pd

from dagster_project.resources import DataLakeResource, ShopResource
from dagster_project.resources.data_lake import QUARANTINE, RAW_EVENTS, VALIDATED_EVENTS
from feature_repo.expectations import run_suites


@dg.asset_check(asset="validated_events", blocking=True, description="Great Expectations suites of the contracts.")
def validated_events_conform(lake: DataLakeResource, shop: ShopResource) -> dg.AssetCheckResult:
    """Every accepted event passes the GE suite derived from its contract (blocks feature building if not)."""
    outcomes = run_suites(lake.read(VALIDATED_EVENTS), as_of=pd.Timestamp(shop.config().end))
    return dg.AssetCheckResult(
        passed=all(o.success for o in outcomes),
        metadata={
            o.suite: dg.MetadataValue.json({"rows": o.rows, "success": o.success, "failed": o.failed})
            for o in outcomes
        },
    )


@dg.asset_check(asset="validated_events", blocking=True, description="Nothing is dropped silently.")
def events_accounted_for(lake: DataLakeResource) -> dg.AssetCheckResult:
    """Rows in = rows accepted + rows quarantined."""
    n_in = len(lake.read(RAW_EVENTS, columns=["event_id"]))
    accepted = len(lake.read(VALIDATED_EVENTS, columns=["event_id"]))
    quarantined = len(lake.read(QUARANTINE, columns=["event_id"]))
    return dg.AssetCheckResult(
        passed=n_in == accepted + quarantined,
        metadata={"events_in": n_in, "accepted": accepted, "quarantined": quarantined},
    )
