"""The landing folder: where a shop's own files come in (docs/landing.md).

    <landing>/events/<YYYY-MM-DD>.<fmt>   one file per UTC day of arrival; rows follow the event contracts
    <landing>/customers.<fmt>             the CRM snapshot: user_id, region, device, consent_marketing, signup_ts
    <landing>/actions.<fmt>               the action catalogue: action_id, unit_cost, ... (see the sample)

`<fmt>` is `parquet`, `csv`, `csv.gz`, `jsonl` or `jsonl.gz`. With `source: simulator` (the default) the simulated shop
writes the folder first (`simulator.landing`), so the demo runs the same path a shop's own files take; with
`source: files` the folder is read as it is and its day files set the pipeline's partitions.

CSV carries no types: a numeral in a numeric column is a number. A value that is not one (`user_id` "abc") cannot
sit in the raw table's numeric column, so its row is refused at landing, kept whole as text with the rule and reason
(`quarantine/landing/<day>.parquet`), and counted: rows read = rows landed + rows refused.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from dagster_project.resources.shop import ShopResource
from feature_repo.contracts import RAW_COLUMNS, parse_timestamps

FORMATS = (".parquet", ".csv", ".csv.gz", ".jsonl", ".jsonl.gz")
EVENTS_DIR = "events"
CUSTOMERS = "customers"
ACTIONS = "actions"
SOURCES = ("simulator", "files")
INT_COLUMNS = ("event_version", "user_id", "item_id", "category_id")
FLOAT_COLUMNS = ("price", "revenue", "propensity")
TEXT_COLUMNS = ("event_id", "event_type", "session_id", "action_id", "surface", "device", "region")
SIMULATED_STAMP = "simulated_shop.json"  # the shop configuration the simulator wrote the folder for


def format_of(path: Path) -> str | None:
    """The landing format of a file name (None for anything else: README files, dot-files)."""
    if path.name.startswith("."):
        return None
    return next((fmt for fmt in sorted(FORMATS, key=len, reverse=True) if path.name.endswith(fmt)), None)


def read_file(path: Path) -> pd.DataFrame:
    """One landing file as a frame (CSV columns as text: `typed_events` gives them their types)."""
    fmt = format_of(path)
    if fmt == ".parquet":
        return pd.read_parquet(path)
    if fmt in (".csv", ".csv.gz"):
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    if fmt in (".jsonl", ".jsonl.gz"):
        return pd.read_json(path, lines=True, dtype=False, convert_dates=False)
    raise ValueError(f"{path}: not a landing file; use one of {list(FORMATS)}")


def _numeric(values: pd.Series, integer: bool) -> tuple[pd.Series, pd.Series]:
    """(the values as numbers, mask of present values that are not numbers). Text numerals count as numbers (CSV);
    true/false never do."""
    if pd.api.types.is_bool_dtype(values):
        return pd.Series(np.nan, index=values.index), values.notna()
    if pd.api.types.is_numeric_dtype(values):
        numbers = pd.to_numeric(values)
    else:
        numbers = pd.to_numeric(values.map(lambda v: None if isinstance(v, (bool, np.bool_)) else v),
                                errors="coerce")
    broken = values.notna() & numbers.isna()
    if integer:
        whole = numbers.isna() | (numbers.mod(1).eq(0) & numbers.abs().lt(2.0**63))
        broken |= ~whole
        numbers = numbers.where(whole)
    return numbers, broken


def typed_events(frame: pd.DataFrame, source: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows in the raw table's union schema and dtypes, rows refused at landing with `rule` and `reason`).

    Missing optional columns are added as null; a file without `event_id`, `event_type` or `ts` is refused whole
    (nothing in it can be validated)."""
    missing = [c for c in ("event_id", "event_type", "ts") if c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: events lack the columns {missing}; every event needs event_id, event_type and "
                         f"ts (docs/landing.md)")
    frame = frame.reset_index(drop=True)
    out = pd.DataFrame(index=frame.index)
    rule = pd.Series(None, index=frame.index, dtype=object)
    reason = pd.Series(None, index=frame.index, dtype=object)
    for column in RAW_COLUMNS:
        values = frame[column] if column in frame.columns else pd.Series(None, index=frame.index, dtype=object)
        if column in INT_COLUMNS or column in FLOAT_COLUMNS:
            numbers, broken = _numeric(values, integer=column in INT_COLUMNS)
            hit = broken & rule.isna()
            rule[hit] = f"{column}.type"
            reason[hit] = f"{column} is not a number in {source}: write a numeral (not text, not true/false)"
            out[column] = numbers.astype("Int64") if column in INT_COLUMNS else numbers.astype("float64")
        elif column == "ts":
            stamps = parse_timestamps(values)
            hit = values.notna() & stamps.isna() & rule.isna()
            rule[hit] = "ts.type"
            reason[hit] = f"ts is not an ISO-8601 time in {source}: write e.g. 2026-10-01T12:00:00Z"
            out[column] = stamps
        else:
            out[column] = values.astype("string")
    refused = rule.notna()
    rejected = frame.loc[refused].astype("string").assign(rule=rule[refused].astype("string"),
                                                          reason=reason[refused].astype("string"))
    return out.loc[~refused].reset_index(drop=True), rejected.reset_index(drop=True)


class LandingResource(dg.ConfigurableResource):
    """The landing folder and who writes it (`simulator` or the shop's own `files`)."""

    path: str
    source: str = "simulator"
    shop: ShopResource

    def folder(self) -> Path:
        return Path(self.path)

    def files(self) -> dict[str, Path]:
        """Day → event file (one per day; two formats for one day is an error that names both)."""
        found: dict[str, Path] = {}
        folder = self.folder() / EVENTS_DIR
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            fmt = format_of(path)
            if fmt is None:
                continue
            day = path.name[: -len(fmt)]
            try:
                datetime.strptime(day, "%Y-%m-%d")
            except ValueError:
                raise ValueError(f"{path}: event files are named by their UTC day of arrival, e.g. "
                                 f"2026-10-01{fmt}") from None
            if day in found:
                raise ValueError(f"two event files for {day}: {found[day].name} and {path.name}; keep one")
            found[day] = path
        return found

    def table(self, name: str) -> Path:
        """The customers or actions file (exactly one format)."""
        candidates = [self.folder() / f"{name}{fmt}" for fmt in FORMATS if (self.folder() / f"{name}{fmt}").exists()]
        if not candidates:
            raise FileNotFoundError(f"no {name} file in {self.folder()}: add {name}.parquet, .csv or .jsonl "
                                    f"(docs/landing.md)")
        if len(candidates) > 1:
            raise ValueError(f"several {name} files in {self.folder()}: {[p.name for p in candidates]}; keep one")
        return candidates[0]

    def span(self) -> tuple[datetime, datetime]:
        """First day and end (exclusive) of the data: the simulated shop's period, or the event files' days."""
        if self.source == "simulator":
            config = self.shop.config()
            return config.start, config.end
        return span_of_files(self.files(), self.folder())

    def end(self) -> pd.Timestamp:
        """The instant the data ends (exclusive): `as of` for validation and label maturity."""
        return pd.Timestamp(self.span()[1])

    def read_customers(self) -> pd.DataFrame:
        frame = read_file(self.table(CUSTOMERS))
        frame["user_id"] = pd.to_numeric(frame["user_id"]).astype("int64")
        if "signup_ts" in frame.columns:
            frame["signup_ts"] = pd.to_datetime(frame["signup_ts"], utc=True, format="ISO8601")
        if "consent_marketing" in frame.columns and frame["consent_marketing"].dtype == object:
            frame["consent_marketing"] = frame["consent_marketing"].astype(str).str.lower().isin(["true", "1"])
        return frame

    def read_actions(self) -> pd.DataFrame:
        frame = read_file(self.table(ACTIONS))
        for column in ("unit_cost",):
            if column in frame.columns:
                frame[column] = pd.to_numeric(frame[column])
        return frame


def span_of_files(files: dict[str, Path], folder: Path) -> tuple[datetime, datetime]:
    if not files:
        raise FileNotFoundError(f"no event files in {folder / EVENTS_DIR}: add <YYYY-MM-DD>.parquet|csv|jsonl files "
                                f"(docs/landing.md)")
    days = sorted(files)
    first = datetime.strptime(days[0], "%Y-%m-%d").replace(tzinfo=timezone.utc)
    last = datetime.strptime(days[-1], "%Y-%m-%d").replace(tzinfo=timezone.utc)
    return first, last + timedelta(days=1)


def simulated_stamp(shop: ShopResource) -> str:
    """What the simulator's files in a landing folder were written for (its configuration)."""
    return json.dumps(shop.model_dump(), sort_keys=True)
