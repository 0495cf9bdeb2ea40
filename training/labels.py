"""Outcome labels for logged exposures: purchase revenue within an attribution window."""

from __future__ import annotations

import numpy as np
import pandas as pd


def attributed_revenue(
    exposures: pd.DataFrame, purchases: pd.DataFrame, window: pd.Timedelta
) -> pd.Series:
    """Sum of the user's purchase revenue in [exposure ts, ts + window) for each exposure row (index preserved).

    `exposures` needs user_id, ts; `purchases` needs user_id, ts, revenue.
    """
    out = np.zeros(len(exposures))
    if len(exposures) == 0 or len(purchases) == 0:
        return pd.Series(out, index=exposures.index, name="label_revenue")
    p = purchases.sort_values(["user_id", "ts"], kind="stable")
    p_user = p["user_id"].to_numpy(dtype=np.int64)
    p_ts = p["ts"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    cum = np.concatenate([[0.0], np.cumsum(p["revenue"].to_numpy(dtype=float))])
    # Order purchases by (user, ts) as one sortable key so a single searchsorted serves every user.
    key = _compound(p_user, p_ts)
    e_user = exposures["user_id"].to_numpy(dtype=np.int64)
    e_ts = exposures["ts"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    lo = np.searchsorted(key, _compound(e_user, e_ts), side="left")
    hi = np.searchsorted(key, _compound(e_user, e_ts + window.value), side="left")
    out = cum[hi] - cum[lo]
    return pd.Series(out, index=exposures.index, name="label_revenue")


def _compound(user: np.ndarray, ts_ns: np.ndarray) -> np.ndarray:
    """(user, ts) as a structured array that sorts lexicographically."""
    arr = np.empty(len(user), dtype=[("u", np.int64), ("t", np.int64)])
    arr["u"], arr["t"] = user, ts_ns
    return arr


def mature_exposures(exposures: pd.DataFrame, data_end: pd.Timestamp, window: pd.Timedelta) -> pd.Series:
    """Mask of exposures whose whole attribution window lies before `data_end` (their label is final)."""
    return exposures["ts"] + window <= data_end
