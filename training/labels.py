"""Outcome labels for logged exposures: attributed purchase revenue within an attribution window.

A purchase is attributed to the latest exposure of the same session at or before it (last touch), if it happened
within `window` of that exposure. Revenue from the user's other sessions belongs to the exposures of those
sessions; counting it here would bury each action's effect under unrelated purchases.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def attributed_revenue(exposures: pd.DataFrame, purchases: pd.DataFrame, window: pd.Timedelta) -> pd.Series:
    """Revenue attributed to each exposure row (index preserved); 0 where nothing was bought in time.

    `exposures` needs session_id, ts; `purchases` needs session_id, ts, revenue.
    """
    labels = pd.Series(0.0, index=exposures.index, name="label_revenue")
    if exposures.empty or purchases.empty:
        return labels
    touch = pd.DataFrame(
        {"session_id": exposures["session_id"].astype(str).to_numpy(), "ts": exposures["ts"].reset_index(drop=True),
         "exposure": np.arange(len(exposures))}
    ).sort_values("ts", kind="stable")
    bought = pd.DataFrame(
        {"session_id": purchases["session_id"].astype(str).to_numpy(), "ts": purchases["ts"].reset_index(drop=True),
         "revenue": purchases["revenue"].to_numpy(dtype=float)}
    ).sort_values("ts", kind="stable")
    # For each purchase, the latest exposure of its session at or before it, no older than the window.
    matched = pd.merge_asof(
        bought, touch, on="ts", by="session_id", direction="backward", tolerance=window, allow_exact_matches=True
    ).dropna(subset=["exposure"])
    matched["exposure"] = matched["exposure"].astype(np.int64)
    # merge_asof's tolerance is inclusive; the window is half-open [exposure, exposure + window).
    exposure_ts = touch.set_index("exposure")["ts"].reindex(matched["exposure"]).to_numpy()
    matched = matched[matched["ts"].to_numpy() < exposure_ts + window]
    sums = matched.groupby("exposure")["revenue"].sum()
    labels.iloc[sums.index.to_numpy()] = sums.to_numpy()
    return labels


def mature_exposures(exposures: pd.DataFrame, data_end: pd.Timestamp, window: pd.Timedelta) -> pd.Series:
    """Mask of exposures whose whole attribution window lies before `data_end` (their label is final)."""
    return exposures["ts"] + window <= data_end
