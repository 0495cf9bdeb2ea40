"""Validation: raw events → accepted events (typed, exactly once) + quarantine rows that keep the broken rule."""


import dagster as dg
import pandas as pd

from dagster_project.partitions import ARRIVAL_DAYS, SINGLE_RUN
from dagster_project.resources import DataLakeResource, EventTimeResource
from dagster_project.resources.data_lake import QUARANTINE, RAW_EVENTS, VALIDATED_EVENTS, VALIDATION_REPORT
from feature_repo.offline_engine import validate_day
from feature_repo.pseudonyms import pseudonymize
from infra.settings import HyperliftSettings


@dg.asset(deps=["raw_events"], partitions_def=ARRIVAL_DAYS, backfill_policy=SINGLE_RUN, group_name="validation")
def validated_events(
    context: dg.AssetExecutionContext, lake: DataLakeResource, event_time: EventTimeResource
) -> dg.MaterializeResult:
    """Per arrival day, apply the contracts, the watermark and cross-partition deduplication: accepted rows to
    validated/ keyed by the user's pseudonym (the door: feature_repo/pseudonyms.py), the rest to quarantine/ as
    received, with rule and reason."""
    lateness = event_time.lateness()
    keys = sorted(context.partition_keys)
    # Ids accepted by earlier days (on disk) are replays; days of this run add theirs as they go, in day order.
    earlier = [k for k in lake.partition_keys(VALIDATED_EVENTS) if k < keys[0]]
    seen = pd.Index(lake.read_partitions(VALIDATED_EVENTS, earlier, ["event_id"])["event_id"] if earlier else [],
                    dtype="string")
    totals = {"events_in": 0, "accepted": 0, "quarantined": 0}
    by_rule: dict[str, int] = {}
    engine = HyperliftSettings()  # HYPERLIFT_OFFLINE_ENGINE: each day single-process (pandas) or on Spark
    door = lake.pseudonymizer()  # the current pseudonym key, made on the first run
    for key in keys:
        raw = lake.read_partitions(RAW_EVENTS, [key])
        result = validate_day(raw, pd.Timestamp(key), lateness, seen, engine)
        lake.write_partition(VALIDATED_EVENTS, key, pseudonymize(result.accepted, door))
        lake.write_partition(QUARANTINE, key, result.quarantined)
        seen = seen.append(pd.Index(result.accepted["event_id"], dtype="string"))
        for name, value in (("events_in", len(raw)), ("accepted", len(result.accepted)),
                            ("quarantined", len(result.quarantined))):
            totals[name] += value
        for rule, n in result.rule_counts.items():
            by_rule[rule] = by_rule.get(rule, 0) + n
    context.log.info("events in %d = accepted %d + quarantined %d over %d arrival days",
                     totals["events_in"], totals["accepted"], totals["quarantined"], len(keys))
    return dg.MaterializeResult(
        metadata={**totals, "quarantined_by_rule": dg.MetadataValue.json(dict(sorted(by_rule.items()))),
                  "allowed_lateness_days": lateness.allowed_days, "pseudonym_key_version": door.version}
    )


@dg.asset(deps=["validated_events"], group_name="validation")
def validation_report(lake: DataLakeResource) -> dg.MaterializeResult:
    """Accepted and quarantined events per arrival day and rule, over every partition on disk."""
    report = validation_counts(lake)
    path = lake.write(VALIDATION_REPORT, report)
    totals = report.drop(columns="arrival_day").sum()
    return dg.MaterializeResult(
        metadata={
            "days": len(report),
            "events_in": int(totals["events_in"]),
            "accepted": int(totals["accepted"]),
            "quarantined": int(totals["quarantined"]),
            "by_day_and_rule": dg.MetadataValue.md(report.to_markdown(index=False) if len(report) < 400 else "(large)"),
            "path": str(path),
        }
    )


def validation_counts(lake: DataLakeResource) -> pd.DataFrame:
    """One row per arrival day: events in, accepted, quarantined, and one column per rule broken."""
    rows = []
    for key in lake.partition_keys(VALIDATED_EVENTS):
        rules = lake.read_partitions(QUARANTINE, [key], ["rule"])["rule"].value_counts()
        row = {
            "arrival_day": key,
            "events_in": len(lake.read_partitions(RAW_EVENTS, [key], ["event_id"])),
            "accepted": len(lake.read_partitions(VALIDATED_EVENTS, [key], ["event_id"])),
            "quarantined": int(rules.sum()),
        }
        rows.append(row | {f"rule:{rule}": int(n) for rule, n in rules.items()})
    report = pd.DataFrame(rows)
    rule_columns = sorted(c for c in report.columns if c.startswith("rule:"))
    return report[["arrival_day", "events_in", "accepted", "quarantined", *rule_columns]].fillna(0).astype(
        {c: "int64" for c in ["events_in", "accepted", "quarantined", *rule_columns]}
    )
