"""Partitions of the data plane: events by the UTC day they arrived."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from simulator import ShopConfig

ARRIVAL_DAYS = dg.DailyPartitionsDefinition(start_date=ShopConfig().start.strftime("%Y-%m-%d"))
"""One partition per UTC day of arrival, from the shop's first day; raw → validated → activity features use it."""

# Partitioned assets take a whole range in one run (one simulation, one pass in day order), never one run per day.
SINGLE_RUN = dg.BackfillPolicy.single_run()


def partition_range_tags(first_day: str, last_day: str) -> dict[str, str]:
    """Run tags that make a job materialize the partitions first_day … last_day (inclusive) in a single run."""
    return {"dagster/asset_partition_range_start": first_day, "dagster/asset_partition_range_end": last_day}


def shop_days(config: ShopConfig) -> dict[str, str]:
    """Run tags for every arrival day of a simulated shop's period."""
    last = config.end - timedelta(days=1)
    return partition_range_tags(config.start.strftime("%Y-%m-%d"), last.strftime("%Y-%m-%d"))
