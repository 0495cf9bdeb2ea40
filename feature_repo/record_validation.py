"""The event contracts evaluated event by event: the streaming path's validator, equal to `validate_events`.

`feature_repo.contracts.validate_events` evaluates the contracts column by column, which is right for a day of
events and costs ~200 ms of pandas overhead for a call of ten. `validate_records` walks the same `CONTRACTS` in the
same order for each event and gives the same accepted rows (through the same `_typed`), the same first broken rule
and the same reason; a property test holds the two to that (`tests/feature_repo/test_record_validation.py`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pandas as pd

from feature_repo.contracts import (
    CONTRACTS, EVENT_TYPES, MAX_FUTURE, RAW_COLUMNS, FieldSpec, ValidationResult, _typed, clamp_big, is_number,
    type_reason,
)

# YYYY-MM-DD[T ]HH:MM:SS[.ffffff][Z|±HH:MM]: forms on which datetime.fromisoformat and pandas' ISO-8601 agree.
_PLAIN_ISO = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?")

_VERSIONS = {t: [v for (tt, v) in CONTRACTS if tt == t] for t in EVENT_TYPES}


def _missing(value: object) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _number(value: object) -> float:
    """What `pd.to_numeric(..., errors="coerce")` makes of one value (NaN when it is not a number), huge ints clamped
    as `contracts._numeric_versions` does (float() of 10**400 raises)."""
    if isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
        return float(clamp_big(value))
    if isinstance(value, str):
        number = pd.to_numeric(value, errors="coerce")
        return float(number) if number is not None else math.nan
    return math.nan


def _timestamp(value: object) -> pd.Timestamp | None:
    """What `parse_timestamps` makes of one value (None for NaT)."""
    if isinstance(value, (pd.Timestamp, datetime)):
        ts = pd.Timestamp(value)
    elif isinstance(value, str):
        try:  # the common forms, 50x cheaper than pandas' parser; pandas decides whatever this refuses
            ts = pd.Timestamp(datetime.fromisoformat(value)) if _PLAIN_ISO.fullmatch(value) else None
        except ValueError:
            ts = None
        if ts is None:
            ts = pd.to_datetime(value, utc=True, errors="coerce", format="ISO8601")
    else:
        return None
    if ts is pd.NaT or pd.isna(ts):
        return None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _field_rule(spec: FieldSpec, value: object) -> tuple[str, str] | None:
    """The first rule of `spec` that `value` breaks (the order of `contracts._field_violations`), or None."""
    if _missing(value):
        return (f"{spec.name}.required", f"{spec.name} is missing") if spec.required else None
    if spec.dtype == "string":
        coerced: object = str(value)
    elif spec.dtype == "timestamp":
        coerced = _timestamp(value)
    else:  # a JSON number, kept exact (2^53 + 1 is not 2^53): `contracts._numbers`
        coerced = clamp_big(value) if is_number(value) else None
    if coerced is None:
        return f"{spec.name}.type", type_reason(spec)
    if spec.dtype == "int" and not (coerced % 1 == 0):  # inf % 1 is NaN: not an integer, as in pandas
        return f"{spec.name}.type", f"{spec.name} is not an integer"
    if spec.allowed is not None and coerced not in spec.allowed:
        return f"{spec.name}.allowed", f"{spec.name} not in {list(spec.allowed)}"
    if spec.min is not None and (coerced <= spec.min if spec.min_exclusive else coerced < spec.min):
        return f"{spec.name}.range", f"{spec.name} must be {'>' if spec.min_exclusive else '>='} {spec.min}"
    if spec.max is not None and coerced > spec.max:
        return f"{spec.name}.range", f"{spec.name} must be <= {spec.max}"
    return None


def _record_rule(
    record: dict, limit: pd.Timestamp, horizon: pd.Timestamp | None
) -> tuple[str, str] | None:
    """The first rule one event breaks, in the order of `validate_events` (duplicates aside)."""
    if _missing(record.get("event_id")):
        return "event_id.required", "event_id is missing"
    event_type = record.get("event_type")
    if not isinstance(event_type, str) or event_type not in _VERSIONS:
        return "event_type.known", f"event_type not in {list(EVENT_TYPES)}"
    versions = _VERSIONS[event_type]
    version = _number(record.get("event_version"))
    if version not in versions:
        return "event_version.supported", f"{event_type} versions supported: {versions}"
    for spec in CONTRACTS[(event_type, int(version))].fields:
        broken = _field_rule(spec, record.get(spec.name))
        if broken is not None:
            return broken
    ts = _timestamp(record.get("ts"))
    if ts is not None and ts > limit:
        return "ts.not_future", f"ts is later than as_of + {MAX_FUTURE} ({limit.isoformat()})"
    if ts is not None and horizon is not None and ts < horizon:
        return "ts.beyond_watermark", f"ts is earlier than the watermark {horizon.isoformat()}"
    return None


def validate_records(
    records: Sequence[dict],
    as_of: pd.Timestamp,
    *,
    not_before: pd.Timestamp | None = None,
    seen_event_ids: set[str] | None = None,
    extra_columns: Sequence[str] = (),
) -> ValidationResult:
    """`validate_events` for a list of events (dicts in the raw union schema), one event at a time.

    `extra_columns` are carried into the quarantined rows (e.g. the event's position in a call).
    """
    limit = pd.Timestamp(as_of).tz_convert("UTC") + MAX_FUTURE
    horizon = pd.Timestamp(not_before).tz_convert("UTC") if not_before is not None else None
    columns = [*RAW_COLUMNS, *extra_columns]
    good: list[dict] = []
    bad: list[dict] = []
    taken: set[str] = set()
    for record in records:
        row = {c: record.get(c) for c in columns}
        broken = _record_rule(row, limit, horizon)
        if broken is None:
            event_id = str(row["event_id"])
            if seen_event_ids is not None and event_id in seen_event_ids:
                broken = ("event_id.unique", "duplicate of an event accepted earlier")
            elif event_id in taken:
                broken = ("event_id.unique", "duplicate event_id")
            else:
                taken.add(event_id)
                good.append(row)
                continue
        bad.append({**row, "rule": broken[0], "reason": broken[1]})
    # dtype=object: values stay as sent (pandas would make a column of None and 0 into floats, "0" into "0.0").
    accepted = _typed(pd.DataFrame(good, columns=list(RAW_COLUMNS), dtype=object)).reset_index(drop=True)
    quarantined = pd.DataFrame(bad, columns=[*columns, "rule", "reason"], dtype=object)
    counts = quarantined["rule"].value_counts().sort_index()
    return ValidationResult(accepted, quarantined, {str(k): int(v) for k, v in counts.items()})
