"""Ingestion: the raw event stream, the CRM customer table and the action catalogue from the (simulated) shop."""


import dagster as dg

from dagster_project.resources import DataLakeResource, ShopResource
from dagster_project.resources.data_lake import ACTION_CATALOGUE, CUSTOMERS, RAW_EVENTS
from simulator import build_shop, simulate_events
from simulator.actions import actions_frame


@dg.multi_asset(
    specs=[
        dg.AssetSpec("raw_events", description="Raw events as they arrive, malformed rows included."),
        dg.AssetSpec("customers", description="CRM snapshot: region, device, marketing consent, sign-up time."),
        dg.AssetSpec("action_catalogue", description="Promotions that can be shown, with unit cost per exposure."),
    ],
    group_name="ingestion",
)
def shop_exports(context: dg.AssetExecutionContext, shop: ShopResource, lake: DataLakeResource):
    """Land the shop's exports (events, customers, actions) as parquet tables."""
    world = build_shop(shop.config())
    events = simulate_events(world)
    context.log.info("simulated %d events for %d users over %d days", len(events), shop.n_users, shop.n_days)
    counts = events["event_type"].value_counts().to_dict()
    yield dg.MaterializeResult(
        asset_key="raw_events",
        metadata={
            "rows": len(events),
            "by_type": dg.MetadataValue.json({str(k): int(v) for k, v in counts.items()}),
            "path": str(lake.write(RAW_EVENTS, events)),
        },
    )
    yield dg.MaterializeResult(
        asset_key="customers", metadata={"rows": len(world.users), "path": str(lake.write(CUSTOMERS, world.users))}
    )
    catalogue = actions_frame()
    yield dg.MaterializeResult(
        asset_key="action_catalogue",
        metadata={"rows": len(catalogue), "path": str(lake.write(ACTION_CATALOGUE, catalogue))},
    )
