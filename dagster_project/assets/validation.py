"""Validation: raw events → accepted events (typed, deduplicated) + quarantine rows that keep the broken rule."""


import dagster as dg
import pandas as pd

from dagster_project.resources import DataLakeResource, ShopResource
from dagster_project.resources.data_lake import QUARANTINE, RAW_EVENTS, VALIDATED_EVENTS
from feature_repo.contracts import validate_events


@dg.asset(deps=["raw_events"], group_name="validation")
def validated_events(context: dg.AssetExecutionContext, lake: DataLakeResource, shop: ShopResource) -> dg.MaterializeResult:
    """Apply the event contracts: accepted rows to validated/, the rest to quarantine/ with rule and reason."""
    raw = lake.read(RAW_EVENTS)
    # The shop's clock is the pipeline's "now": events stamped after it are from the future.
    result = validate_events(raw, as_of=pd.Timestamp(shop.config().end))
    lake.write(VALIDATED_EVENTS, result.accepted)
    lake.write(QUARANTINE, result.quarantined)
    context.log.info(
        "events in %d = accepted %d + quarantined %d", len(raw), len(result.accepted), len(result.quarantined)
    )
    return dg.MaterializeResult(
        metadata={
            "events_in": len(raw),
            "accepted": len(result.accepted),
            "quarantined": len(result.quarantined),
            "quarantined_by_rule": dg.MetadataValue.json(result.rule_counts),
        }
    )
