"""Ingestion: the landing folder (the shop's files, or the simulator's), the raw event stream by arrival day, the CRM
customer table and the action catalogue."""

import dagster as dg
import pandas as pd

from dagster_project.partitions import ARRIVAL_DAYS, SINGLE_RUN
from dagster_project.resources import DataLakeResource, LandingResource
from dagster_project.resources.data_lake import ACTION_CATALOGUE, CUSTOMERS, LANDING_QUARANTINE, RAW_EVENTS
from dagster_project.resources.landing import SIMULATED_STAMP, read_file, simulated_stamp, typed_events
from feature_repo.contracts import RAW_COLUMNS
from simulator.landing import write_landing


@dg.asset(group_name="ingestion")
def landing(context: dg.AssetExecutionContext, landing: LandingResource) -> dg.MaterializeResult:
    """The landing folder: with `source: simulator` the simulated shop writes its files here first (again only when
    its configuration changed); with `source: files` the shop's own files are checked and listed as they are."""
    folder = landing.folder()
    written = False
    if landing.source == "simulator":
        stamp = folder / SIMULATED_STAMP
        wanted = simulated_stamp(landing.shop)
        if not stamp.exists() or stamp.read_text() != wanted or not landing.files():
            rows = write_landing(landing.shop.config(), folder)
            stamp.write_text(wanted)
            written = True
            context.log.info("the simulator wrote %d events in %d day files to %s", sum(rows.values()), len(rows),
                             folder)
    files = landing.files()
    first, end = landing.span()
    return dg.MaterializeResult(metadata={
        "source": landing.source,
        "folder": dg.MetadataValue.path(str(folder)),
        "event_days": len(files),
        "first_day": first.strftime("%Y-%m-%d"),
        "last_day": (pd.Timestamp(end) - pd.Timedelta(days=1)).strftime("%Y-%m-%d"),
        "written_by_simulator": written,
        "customers": landing.table("customers").name,
        "actions": landing.table("actions").name,
    })


@dg.multi_asset(
    specs=[
        dg.AssetSpec("customers", deps=["landing"],
                     description="CRM snapshot: region, device, marketing consent, sign-up time."),
        dg.AssetSpec("action_catalogue", deps=["landing"],
                     description="Promotions that can be shown, with unit cost per exposure."),
    ],
    group_name="ingestion",
)
def shop_reference(landing: LandingResource, lake: DataLakeResource):
    """Land the shop's reference tables (customers, actions) as parquet."""
    users = landing.read_customers()
    yield dg.MaterializeResult(asset_key="customers",
                               metadata={"rows": len(users), "path": str(lake.write(CUSTOMERS, users))})
    catalogue = landing.read_actions()
    yield dg.MaterializeResult(
        asset_key="action_catalogue",
        metadata={"rows": len(catalogue), "path": str(lake.write(ACTION_CATALOGUE, catalogue))},
    )


@dg.asset(deps=["landing"], partitions_def=ARRIVAL_DAYS, backfill_policy=SINGLE_RUN, group_name="ingestion")
def raw_events(context: dg.AssetExecutionContext, landing: LandingResource, lake: DataLakeResource) -> dg.MaterializeResult:
    """Raw events as they arrived each day, malformed and late rows included (one parquet file per arrival day).
    Rows whose values cannot be typed at all (text in a numeric column of a CSV) are refused at landing, kept whole
    in `quarantine/landing`, and counted: read = landed + refused."""
    files = landing.files()
    if not files:  # never an empty lake in silence: the folder is empty, or `landing` has not run
        raise FileNotFoundError(f"no event files in {landing.folder() / 'events'}: materialize `landing` first "
                                f"(source {landing.source!r}) or add the shop's files (docs/landing.md)")
    rows, refused, empty_days = {}, {}, []
    for key in context.partition_keys:
        path = files.get(key)
        if path is None:
            empty_days.append(key)
            frame = pd.DataFrame({c: pd.Series(dtype=object) for c in RAW_COLUMNS})
        else:
            frame = read_file(path)
        landed, rejected = typed_events(frame, str(path or key))
        lake.write_partition(RAW_EVENTS, key, landed)
        lake.write_partition(LANDING_QUARANTINE, key, rejected)
        rows[key], refused[key] = len(landed), len(rejected)
    context.log.info("landed %d raw events in %d arrival days (%d refused at landing)", sum(rows.values()), len(rows),
                     sum(refused.values()))
    return dg.MaterializeResult(metadata={
        "rows": sum(rows.values()), "refused_at_landing": sum(refused.values()),
        "days_without_a_file": dg.MetadataValue.json(empty_days),
        "rows_by_day": dg.MetadataValue.json(rows),
    })
