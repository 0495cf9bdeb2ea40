"""Partitions of the data plane: events by the UTC day they arrived, decisions by the UTC day they were made."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from dagster_project.resources.landing import LandingResource, span_of_files
from dagster_project.resources.shop import ShopResource
from infra.settings import HyperliftSettings
from serving.store.decision_log import partition_dates
from simulator import ShopConfig


def data_span(settings: HyperliftSettings | None = None) -> tuple[datetime, datetime]:
    """First day and end (exclusive) of the data the pipeline ingests: the simulated shop's period
    (HYPERLIFT_SIM_DAYS), or the days of the event files in the landing folder (HYPERLIFT_LANDING_SOURCE=files)."""
    settings = settings or HyperliftSettings()
    if settings.landing_source == "files":
        folder = settings.resolved_landing_dir
        return span_of_files(LandingResource(path=str(folder), source="files",
                                             shop=ShopResource.from_config(ShopConfig())).files(), folder)
    config = ShopConfig.from_env()
    return config.start, config.end


def _arrival_days() -> dg.DailyPartitionsDefinition:
    try:
        start, end = data_span()
    except (FileNotFoundError, ValueError) as error:  # a landing folder not filled yet: the UI still loads
        warnings.warn(f"arrival-day partitions: {error}; using the simulated shop's period", stacklevel=2)
        config = ShopConfig.from_env()
        start, end = config.start, config.end
    return dg.DailyPartitionsDefinition(start_date=start.strftime("%Y-%m-%d"), end_date=end.strftime("%Y-%m-%d"))


ARRIVAL_DAYS = _arrival_days()
"""One partition per UTC day of arrival over the data's span (no open-ended days up to today); raw → validated →
activity features use it."""

# Partitioned assets take a whole range in one run (one simulation, one pass in day order), never one run per day.
SINGLE_RUN = dg.BackfillPolicy.single_run()


def partition_range_tags(first_day: str, last_day: str) -> dict[str, str]:
    """Run tags that make a job materialize the partitions first_day … last_day (inclusive) in a single run."""
    return {"dagster/asset_partition_range_start": first_day, "dagster/asset_partition_range_end": last_day}


def shop_days(config: ShopConfig) -> dict[str, str]:
    """Run tags for every arrival day of a simulated shop's period."""
    last = config.end - timedelta(days=1)
    return partition_range_tags(config.start.strftime("%Y-%m-%d"), last.strftime("%Y-%m-%d"))


DECISION_DAYS = dg.DynamicPartitionsDefinition(name="decision_days")
"""One partition per UTC date that holds drained decisions and is over (today's decisions are still arriving):
registered by the drain (`decision_trace`) and by `decision_log_sensor` (`complete_decision_days`), so the UI lists
no day without decisions. decision_outcomes → experiment_readout use it."""


def complete_decision_days(root: Path, now: float) -> list[str]:
    """UTC dates (YYYY-MM-DD, ascending) of the decision partitions under `root` that hold a parquet file and have
    ended by `now` (epoch seconds; the run's clock, simulated or wall)."""
    days = []
    for day in partition_dates(root):
        end = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC).timestamp()
        if end <= now and any((root / f"date={day.isoformat()}").glob("part-*.parquet")):
            days.append(day.isoformat())
    return days


def unregistered_decision_days(instance: dg.DagsterInstance, days: Iterable[str]) -> list[str]:
    """The days not yet partitions of DECISION_DAYS on this instance, in the order given."""
    known = set(instance.get_dynamic_partitions(DECISION_DAYS.name))
    return [day for day in days if day not in known]


def decision_days_without_data(instance: dg.DagsterInstance, root: Path) -> list[str]:
    """Partitions of DECISION_DAYS whose decisions are no longer in the lake under `root` (deleted by retention)."""
    return [day for day in instance.get_dynamic_partitions(DECISION_DAYS.name)
            if not any((root / f"date={day}").glob("part-*.parquet"))]
