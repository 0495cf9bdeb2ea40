"""What is known about each exposure at a time `as_of`: converted with a delay, or still pending for c hours.

Attribution is the rule of `training.labels.attributed_revenue`: a purchase belongs to the latest exposure of the
same session at or before it, if it happened in [exposure.ts, exposure.ts + W). Here only purchases with
ts <= as_of count (the later ones have not happened yet), and exposures after as_of are dropped. Per exposure:

    converted      at least one attributed purchase by as_of
    delay_hours    first attributed purchase − exposure.ts (NaN if not converted)
    revenue        attributed revenue realised by as_of
    elapsed_hours  delay_hours if converted, else min(as_of − exposure.ts, W): the right-censoring time
    window_closed  exposure.ts + W <= as_of: the row's label is final
"""

from __future__ import annotations

import numpy as np
import pandas as pd

HOUR = pd.Timedelta(hours=1)


def observed_outcomes(
    exposures: pd.DataFrame, purchases: pd.DataFrame, as_of: pd.Timestamp, window_hours: float = 72.0
) -> pd.DataFrame:
    """The exposures up to as_of (index and columns kept) plus converted, delay_hours, revenue, elapsed_hours,
    window_closed. `exposures` needs session_id, ts; `purchases` needs session_id, ts, revenue."""
    for frame, name, columns in ((exposures, "exposures", ("session_id", "ts")),
                                 (purchases, "purchases", ("session_id", "ts", "revenue"))):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} lacks columns {missing}; it needs {list(columns)}")
    as_of = pd.Timestamp(as_of)
    window = pd.Timedelta(hours=window_hours)
    seen = exposures.loc[exposures["ts"] <= as_of].copy()
    touch = pd.DataFrame({
        "session_id": seen["session_id"].astype(str).to_numpy(), "ts": seen["ts"].reset_index(drop=True),
        "exposure": np.arange(len(seen)),
    }).sort_values("ts", kind="stable")
    bought = purchases.loc[purchases["ts"] <= as_of]
    bought = pd.DataFrame({
        "session_id": bought["session_id"].astype(str).to_numpy(), "ts": bought["ts"].reset_index(drop=True),
        "revenue": bought["revenue"].to_numpy(dtype=float),
    }).sort_values("ts", kind="stable")
    matched = pd.merge_asof(
        bought, touch.rename(columns={"ts": "exposure_ts"}), left_on="ts", right_on="exposure_ts",
        by="session_id", direction="backward", tolerance=window, allow_exact_matches=True,
    ).dropna(subset=["exposure"])
    matched = matched[matched["ts"] < matched["exposure_ts"] + window]  # the window is half-open
    matched = matched.assign(delay=(matched["ts"] - matched["exposure_ts"]) / HOUR)
    per_exposure = matched.groupby(matched["exposure"].astype(np.int64)).agg(
        delay=("delay", "min"), revenue=("revenue", "sum")
    )
    position = np.arange(len(seen))
    delay = per_exposure["delay"].reindex(position).to_numpy()
    converted = ~np.isnan(delay)
    age = ((as_of - seen["ts"]) / HOUR).to_numpy(dtype=float)
    seen["converted"] = converted
    seen["delay_hours"] = delay
    seen["revenue"] = per_exposure["revenue"].reindex(position).fillna(0.0).to_numpy()
    seen["elapsed_hours"] = np.where(converted, delay, np.minimum(age, float(window_hours)))
    seen["window_closed"] = age >= float(window_hours)
    return seen
