"""Small hand-made event frames in the raw union schema."""

from __future__ import annotations

import pandas as pd

from feature_repo.contracts import RAW_COLUMNS

START = pd.Timestamp("2026-10-01", tz="UTC")


def event(**fields) -> dict:
    """One raw event row with sensible defaults for a valid page_view."""
    row = {c: None for c in RAW_COLUMNS}
    row.update(
        event_id="e1", event_type="page_view", event_version=1, ts=START + pd.Timedelta(hours=1), user_id=1,
        session_id="s1", item_id=10, category_id=2, price=10.0, device="mobile", region="north",
    )
    row.update(fields)
    return row


def frame(rows: list[dict]) -> pd.DataFrame:
    """A raw event frame with the dtypes the simulator and ingestion produce."""
    df = pd.DataFrame(rows, columns=list(RAW_COLUMNS))
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    for name in ("event_version", "user_id", "item_id", "category_id"):
        df[name] = df[name].astype("Int64")
    for name in ("price", "revenue", "propensity"):
        df[name] = df[name].astype("float64")
    return df
