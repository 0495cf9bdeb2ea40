"""Versioned event contracts and the row-level validation that splits raw events into accepted and quarantined.

A contract lists, per (event_type, event_version), the fields an event must carry, their types, allowed values,
ranges and units. `validate_events` applies them row by row (vectorised) and records the *first* rule each bad row
broke; `feature_repo.expectations` derives a Great Expectations suite from the same contracts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

import numpy as np
import pandas as pd

from feature_repo.transforms import DEVICES, N_CATEGORIES, REGIONS

FieldType = Literal["string", "int", "float", "timestamp"]


@dataclass(frozen=True)
class FieldSpec:
    """One field of an event: its type, whether it is required, allowed values, inclusive/exclusive range, unit."""

    name: str
    dtype: FieldType
    required: bool = True
    allowed: tuple[object, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    unit: str | None = None


@dataclass(frozen=True)
class EventContract:
    """The schema of one version of one event type."""

    event_type: str
    event_version: int
    fields: tuple[FieldSpec, ...]
    description: str = ""

    def field_names(self) -> list[str]:
        """Names of the fields of this contract, in order."""
        return [f.name for f in self.fields]


MAX_ID = 2**53 - 1
"""Largest id: the largest integer a JSON double holds exactly (JavaScript's Number.MAX_SAFE_INTEGER). 2^53 + 1
read as a double is 2^53, a different user; with this bound every id that rounds is over it, so refused."""

MAX_MONEY = 1_000_000.0
"""Largest price or revenue of one event, in currency units. Money is summed in integer micro-units
(`transforms.MICROS`): one event adds at most 10^12 of them, so a user's lifetime sum stays exact far past any
real shop (`feature_repo.stream` refuses the event that would take it past 2^53); 9.2e12, the int64 limit of a
single event, used to wrap round to a negative tile."""

_ENVELOPE = (
    FieldSpec("event_id", "string"),
    FieldSpec("event_type", "string"),
    FieldSpec("event_version", "int"),
    FieldSpec("ts", "timestamp", unit="UTC event time"),
    FieldSpec("user_id", "int", min=0, max=MAX_ID),
    FieldSpec("session_id", "string"),
    FieldSpec("device", "string", required=False, allowed=DEVICES),
    FieldSpec("region", "string", required=False, allowed=REGIONS),
)
_ITEM = (
    FieldSpec("item_id", "int", min=0, max=MAX_ID),
    FieldSpec("category_id", "int", min=0, max=N_CATEGORIES - 1),
    FieldSpec("price", "float", min=0, max=MAX_MONEY, min_exclusive=True, unit="currency (list price)"),
)

CONTRACTS: dict[tuple[str, int], EventContract] = {
    (c.event_type, c.event_version): c
    for c in (
        EventContract("page_view", 1, _ENVELOPE + _ITEM, "A user viewed an item page."),
        EventContract("add_to_cart", 1, _ENVELOPE + _ITEM, "A user put an item in the cart."),
        EventContract(
            "purchase",
            1,
            _ENVELOPE
            + _ITEM
            + (
                FieldSpec("revenue", "float", min=0, max=MAX_MONEY, unit="currency paid, after discount"),
                FieldSpec("action_id", "string", required=False),
            ),
            "A completed order line; revenue may arrive days after the exposure that caused it.",
        ),
        EventContract(
            "promo_exposure",
            1,
            _ENVELOPE
            + (
                FieldSpec("action_id", "string"),
                FieldSpec("propensity", "float", min=0, max=1, min_exclusive=True, unit="probability"),
                FieldSpec("surface", "string"),
            ),
            "The logging policy showed an action (or no_action) with the logged probability.",
        ),
    )
}
EVENT_TYPES = tuple(sorted({t for t, _ in CONTRACTS}))
RAW_COLUMNS = (
    "event_id", "event_type", "event_version", "ts", "user_id", "session_id", "item_id", "category_id",
    "price", "revenue", "action_id", "propensity", "surface", "device", "region",
)
"""Columns of the raw event table (a union over event types; fields not in an event's contract are null)."""

MAX_FUTURE = timedelta(minutes=5)
"""Clock-skew tolerance: an event stamped later than `as_of + MAX_FUTURE` is quarantined as from the future."""


@dataclass
class ValidationResult:
    """Accepted rows, quarantined rows (with `rule` and `reason`), and counts per rule."""

    accepted: pd.DataFrame
    quarantined: pd.DataFrame
    rule_counts: dict[str, int] = field(default_factory=dict)

    @property
    def n_in(self) -> int:
        """Rows that came in; always accepted + quarantined."""
        return len(self.accepted) + len(self.quarantined)


def parse_timestamps(values: pd.Series) -> pd.Series:
    """UTC timestamps from datetimes or ISO-8601 strings, each string parsed on its own (with or without fractions
    or offsets: pandas would otherwise infer one format from the first value); unparseable values become NaT."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return pd.to_datetime(values, utc=True)
    return pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")


BIG_INT = 2**64
"""Integers at or beyond this size stand in as ±2^64 (pandas cannot convert them to floats): over every bound."""


def is_number(value: object) -> bool:
    """Whether a value is a JSON number: an int or a float, never a bool (True is not user 1) nor a string ("1"
    is text). JSON has one number type, so 7.0 is the integer 7, as JSON Schema's "integer" says too."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def clamp_big(value: object) -> object:
    """An int too large for a float as ±2^64 (still integral, still beyond every bound); anything else as it is."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= BIG_INT:
        return BIG_INT if value > 0 else -BIG_INT
    return value


def _numbers(values: pd.Series) -> pd.Series:
    """The values as numbers: NaN where a value is not a JSON number (see `is_number`). A typed numeric column is
    numbers throughout; a bool or text column holds none; an object column (values as sent) is judged value by value."""
    if pd.api.types.is_bool_dtype(values):
        return pd.Series(np.nan, index=values.index)
    if pd.api.types.is_numeric_dtype(values):
        return pd.to_numeric(values)
    if values.dtype != object:
        return pd.Series(np.nan, index=values.index)
    numbers = values.map(lambda v: clamp_big(v) if is_number(v) else None)
    return pd.to_numeric(numbers, errors="coerce")


def _numeric_versions(values: pd.Series) -> pd.Series:
    """Event versions as `pd.to_numeric` reads them (numeric text included), with huge ints clamped (pandas raises)."""
    if values.dtype == object:
        values = values.map(clamp_big)
    return pd.to_numeric(values, errors="coerce")


def type_reason(spec: FieldSpec) -> str:
    """Why a present value of `spec` is not of its type, saying what to send."""
    if spec.dtype == "int":
        return f"{spec.name} is not an integer: send a JSON number without a fraction (not text, not true/false)"
    if spec.dtype == "float":
        return f"{spec.name} is not a number: send a JSON number (not text, not true/false)"
    return f"{spec.name} is not a {spec.dtype}"


def _coerce(values: pd.Series, dtype: FieldType) -> pd.Series:
    if dtype == "string":
        return values.astype("string")
    if dtype == "timestamp":
        return parse_timestamps(values)
    numeric = _numbers(values)
    integral = numeric.dropna()
    fits = integral.mod(1).eq(0).all() and integral.abs().lt(2.0**63).all()
    return numeric.astype("Int64") if dtype == "int" and fits else numeric


def _field_violations(spec: FieldSpec, values: pd.Series) -> list[tuple[str, pd.Series, str]]:
    """(rule, broken-mask, reason) for one field over the rows of one contract, in the order they are checked."""
    present = values.notna()
    coerced = _coerce(values, spec.dtype)
    checks = [(f"{spec.name}.required", ~present if spec.required else present & False, f"{spec.name} is missing")]
    checks.append((f"{spec.name}.type", present & coerced.isna(), type_reason(spec)))
    if spec.dtype == "int":
        not_integer = present & coerced.notna() & (coerced.astype("float64") % 1 != 0)
        checks.append((f"{spec.name}.type", not_integer, f"{spec.name} is not an integer"))
    if spec.allowed is not None:
        checks.append(
            (f"{spec.name}.allowed", coerced.notna() & ~coerced.isin(spec.allowed), f"{spec.name} not in {list(spec.allowed)}")
        )
    if spec.min is not None:
        low = coerced <= spec.min if spec.min_exclusive else coerced < spec.min
        op = ">" if spec.min_exclusive else ">="
        checks.append((f"{spec.name}.range", low.fillna(False).astype(bool), f"{spec.name} must be {op} {spec.min}"))
    if spec.max is not None:
        checks.append((f"{spec.name}.range", (coerced > spec.max).fillna(False).astype(bool), f"{spec.name} must be <= {spec.max}"))
    return checks


def validate_events(
    raw: pd.DataFrame,
    as_of: pd.Timestamp,
    *,
    not_before: pd.Timestamp | None = None,
    seen_event_ids: pd.Index | None = None,
) -> ValidationResult:
    """Split raw events into accepted (typed, deduplicated by event_id) and quarantined rows with the rule broken.

    `not_before` is the watermark: events stamped earlier arrived too late to change features that are already
    final, and are quarantined as `ts.beyond_watermark`. `seen_event_ids` are ids accepted before (earlier
    partitions, earlier runs): a copy of one is a replay, quarantined as `event_id.unique`.
    """
    missing = [c for c in RAW_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"raw events lack columns {missing}; expected the union schema {list(RAW_COLUMNS)}")
    raw = raw.reset_index(drop=True)
    # The first rule each row breaks; plain arrays, since a validation marks ~140 rules (a pandas setitem each
    # would cost more than the checks themselves on small batches such as the streaming path's).
    rule = np.full(len(raw), None, dtype=object)
    reason = np.full(len(raw), None, dtype=object)

    def mark(mask: pd.Series, name: str, why: str) -> None:
        hit = mask.reindex(raw.index, fill_value=False).to_numpy(dtype=bool) & (rule == None)  # noqa: E711
        if hit.any():
            rule[hit] = name
            reason[hit] = why

    mark(raw["event_id"].isna(), "event_id.required", "event_id is missing")
    mark(~raw["event_type"].isin(EVENT_TYPES), "event_type.known", f"event_type not in {list(EVENT_TYPES)}")
    version = _numeric_versions(raw["event_version"])
    for event_type in EVENT_TYPES:
        rows = raw["event_type"] == event_type
        versions = [v for t, v in CONTRACTS if t == event_type]
        mark(rows & ~version.isin(versions), "event_version.supported", f"{event_type} versions supported: {versions}")
        for (t, v), contract in CONTRACTS.items():
            if t != event_type:
                continue
            scope = raw.index[rows & (version == v)]
            for spec in contract.fields:
                for name, broken, why in _field_violations(spec, raw.loc[scope, spec.name]):
                    mark(broken, name, why)
    ts = parse_timestamps(raw["ts"])
    limit = pd.Timestamp(as_of).tz_convert("UTC") + MAX_FUTURE
    mark(ts > limit, "ts.not_future", f"ts is later than as_of + {MAX_FUTURE} ({limit.isoformat()})")
    if not_before is not None:
        horizon = pd.Timestamp(not_before).tz_convert("UTC")
        mark(ts < horizon, "ts.beyond_watermark", f"ts is earlier than the watermark {horizon.isoformat()}")
    # Exactly one copy of an event id is accepted; later copies (retries, replays) are kept in quarantine.
    # Only valid rows compete, so a malformed copy never shadows a good one.
    if seen_event_ids is not None and len(seen_event_ids):
        replayed = raw["event_id"].astype("string").isin(seen_event_ids)
        mark(replayed, "event_id.unique", "duplicate of an event accepted earlier")
    ok = rule == None  # noqa: E711
    # Ids compare as text, as they are stored (in Python False == 0, and pandas would call those two copies).
    mark(raw.loc[ok, "event_id"].astype("string").duplicated(keep="first"), "event_id.unique", "duplicate event_id")

    bad = rule != None  # noqa: E711
    accepted = _typed(raw.loc[~bad]).reset_index(drop=True)
    quarantined = raw.loc[bad].assign(
        rule=pd.array(rule[bad], dtype="string"), reason=pd.array(reason[bad], dtype="string")
    ).reset_index(drop=True)
    counts = quarantined["rule"].value_counts().sort_index()
    return ValidationResult(accepted, quarantined, {str(k): int(v) for k, v in counts.items()})


def _typed(accepted: pd.DataFrame) -> pd.DataFrame:
    """Cast accepted rows to the canonical dtypes of the validated event table."""
    out = accepted[list(RAW_COLUMNS)].copy().astype(object)
    # A field outside the event's contract was never checked: the union schema holds it as null, so junk there
    # can neither reach the features nor break the casts below.
    version = pd.to_numeric(out["event_version"], errors="coerce")
    for (event_type, event_version), contract in CONTRACTS.items():
        rows = (out["event_type"] == event_type) & (version == event_version)
        foreign = [c for c in RAW_COLUMNS if c not in contract.field_names()]
        if rows.any() and foreign:
            out.loc[rows, foreign] = None
    out["ts"] = parse_timestamps(out["ts"])
    for name in ("event_version", "user_id", "item_id", "category_id"):
        out[name] = pd.to_numeric(out[name]).astype("Int64")
    for name in ("price", "revenue", "propensity"):
        out[name] = pd.to_numeric(out[name]).astype("float64")
    for name in ("event_id", "event_type", "session_id", "action_id", "surface", "device", "region"):
        out[name] = out[name].astype("string")
    return out.sort_values(["ts", "event_id"], kind="stable")
