"""Great Expectations suites derived from the event contracts, one per (event_type, event_version)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

from feature_repo.contracts import CONTRACTS, MAX_FUTURE, EventContract

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no usage telemetry from a pipeline run
import great_expectations as gx  # noqa: E402  (must follow the telemetry switch)
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402


def suite_for(contract: EventContract) -> gx.ExpectationSuite:
    """The expectation suite that mirrors one contract: required, allowed values, ranges, unique event ids."""
    suite = gx.ExpectationSuite(name=f"{contract.event_type}_v{contract.event_version}")
    add = suite.add_expectation
    for spec in contract.fields:
        if spec.required:
            add(gx.expectations.ExpectColumnValuesToNotBeNull(column=spec.name))
        if spec.allowed is not None:
            add(gx.expectations.ExpectColumnValuesToBeInSet(column=spec.name, value_set=list(spec.allowed)))
        if spec.min is not None or spec.max is not None:
            add(
                gx.expectations.ExpectColumnValuesToBeBetween(
                    column=spec.name, min_value=spec.min, max_value=spec.max, strict_min=spec.min_exclusive
                )
            )
    add(gx.expectations.ExpectColumnValuesToBeUnique(column="event_id"))
    add(gx.expectations.ExpectColumnValuesToBeInSet(column="event_type", value_set=[contract.event_type]))
    return suite


@dataclass(frozen=True)
class SuiteOutcome:
    """Result of one suite on one slice of accepted events."""

    suite: str
    rows: int
    success: bool
    failed: dict[str, int]  # expectation "type(column)" -> unexpected count


def run_suites(accepted: pd.DataFrame, as_of: pd.Timestamp) -> list[SuiteOutcome]:
    """Validate accepted events with the suite of their contract; also checks no event is later than as_of."""
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # one line per suite, not per metric
    source = context.data_sources.add_pandas("validated_events")
    outcomes = []
    for (event_type, version), contract in sorted(CONTRACTS.items()):
        rows = accepted[(accepted["event_type"] == event_type) & (accepted["event_version"] == version)]
        frame = rows[contract.field_names()].copy()
        # GE compares timestamps as values; express the future rule as a bound on ts.
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        suite = suite_for(contract)
        suite.add_expectation(
            gx.expectations.ExpectColumnValuesToBeBetween(
                column="ts", max_value=pd.Timestamp(as_of).tz_convert("UTC") + MAX_FUTURE
            )
        )
        batch = (
            source.add_dataframe_asset(suite.name)
            .add_batch_definition_whole_dataframe("all")
            .get_batch(batch_parameters={"dataframe": frame})
        )
        result = batch.validate(suite, result_format="SUMMARY")
        failed = {
            f"{r.expectation_config.type}({r.expectation_config.kwargs.get('column')})": int(
                r.result.get("unexpected_count") or 0
            )
            for r in result.results
            if not r.success
        }
        outcomes.append(SuiteOutcome(suite.name, len(frame), bool(result.success), failed))
    return outcomes
