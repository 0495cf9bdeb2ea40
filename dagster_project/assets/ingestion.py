"""Ingestion: the raw event stream by arrival day, the CRM customer table and the action catalogue of the shop."""


import dagster as dg

from dagster_project.partitions import ARRIVAL_DAYS, SINGLE_RUN
from dagster_project.resources import DataLakeResource, ShopResource
from dagster_project.resources.data_lake import ACTION_CATALOGUE, CUSTOMERS, RAW_EVENTS
from simulator import build_shop, simulate_events
from simulator.actions import actions_frame
from simulator.arrival import arrival_days


@dg.multi_asset(
    specs=[
        dg.AssetSpec("customers", description="CRM snapshot: region, device, marketing consent, sign-up time."),
        dg.AssetSpec("action_catalogue", description="Promotions that can be shown, with unit cost per exposure."),
    ],
    group_name="ingestion",
)
def shop_reference(shop: ShopResource, lake: DataLakeResource):
    """Land the shop's reference tables (customers, actions) as parquet."""
    world = build_shop(shop.config())
    yield dg.MaterializeResult(
        asset_key="customers", metadata={"rows": len(world.users), "path": str(lake.write(CUSTOMERS, world.users))}
    )
    catalogue = actions_frame()
    yield dg.MaterializeResult(
        asset_key="action_catalogue",
        metadata={"rows": len(catalogue), "path": str(lake.write(ACTION_CATALOGUE, catalogue))},
    )


@dg.asset(partitions_def=ARRIVAL_DAYS, backfill_policy=SINGLE_RUN, group_name="ingestion")
def raw_events(context: dg.AssetExecutionContext, shop: ShopResource, lake: DataLakeResource) -> dg.MaterializeResult:
    """Raw events as they arrived each day, malformed and late rows included (one parquet file per arrival day)."""
    config = shop.config()
    events = simulate_events(build_shop(config))
    arrived = arrival_days(events, config).dt.strftime("%Y-%m-%d")
    rows = {}
    for key in context.partition_keys:
        part = events.loc[arrived == key]
        lake.write_partition(RAW_EVENTS, key, part.reset_index(drop=True))
        rows[key] = len(part)
    context.log.info("landed %d raw events in %d arrival days", sum(rows.values()), len(rows))
    return dg.MaterializeResult(metadata={"rows": sum(rows.values()), "rows_by_day": dg.MetadataValue.json(rows)})
