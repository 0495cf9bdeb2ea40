"""When events reach the platform: most on the day they happen, some days late (offline apps, batch uploads).

`arrival_days` gives each raw row its arrival day, deterministically from its event_id, so the same shop always
lands the same rows in the same daily partitions. Rows whose own ts is unusable (malformed, or from the future)
arrive with the row before them: they were sent in the same batch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from simulator.config import ShopConfig

LATE_SHARES: tuple[tuple[int, float], ...] = ((1, 0.015), (2, 0.005), (4, 0.002))
"""(days late, share of events): 1.5 % a day late, 0.5 % two days, 0.2 % four days (behind a 2-day watermark)."""


def arrival_days(events: pd.DataFrame, config: ShopConfig) -> pd.Series:
    """The UTC midnight of the day each row arrives, within the shop's period (stragglers come on its last day)."""
    start, end = pd.Timestamp(config.start), pd.Timestamp(config.end)
    ts = pd.to_datetime(events["ts"], utc=True, errors="coerce", format="mixed")
    ts = ts.where((ts >= start) & (ts < end)).ffill().bfill().fillna(start)
    u = (pd.util.hash_pandas_object(events["event_id"].astype("string").fillna(""), index=False).to_numpy()
         % np.uint64(1_000_000)) / 1_000_000.0
    lag = np.zeros(len(events), dtype=np.int64)
    edge = 0.0
    for days, share in LATE_SHARES:
        lag[(u >= edge) & (u < edge + share)] = days
        edge += share
    arrival = ts.dt.floor("D") + pd.to_timedelta(lag, unit="D")
    return arrival.clip(upper=end - pd.Timedelta(days=1)).set_axis(events.index)
