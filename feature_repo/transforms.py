"""Pure feature transforms: one definition of every user feature, called by the batch assets (and later streaming).

User activity features are daily snapshots: the row stamped `event_timestamp = T` (midnight UTC) summarises every
accepted event with `ts < T`, so a point-in-time join at time t >= T never sees the future.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

N_CATEGORIES = 8
"""Item categories known to the feature schema; the event contract rejects category ids outside [0, N_CATEGORIES)."""

DECAY_PER_DAY = 0.8
"""λ of the exponentially decayed accumulators z_d = λ·z_{d-1} + x_d (half-life ≈ 3.1 days)."""

RECENCY_CAP_DAYS = 60.0
"""Recency features are capped here; a user never seen doing the thing also gets the cap."""

REGIONS = ("north", "south", "east", "west")
DEVICES = ("mobile", "desktop")

ACTIVITY_FEATURES: tuple[str, ...] = (
    "days_since_last_visit",
    "days_since_last_purchase",
    "page_views_total",
    "purchases_total",
    "revenue_total",
    "avg_order_value",
    "avg_viewed_price",
    "mobile_view_share",
    "activity_decayed",
    "purchases_decayed",
    "exposures_decayed",
    *(f"category_affinity_{c}" for c in range(N_CATEGORIES)),
)
"""Columns of `user_activity_fv`, all Float32, in schema order."""

PROFILE_FEATURES: tuple[str, ...] = ("region_code", "is_mobile", "consent_marketing")
"""Columns of `user_profile_fv`, all Int64, in schema order."""


@dataclass(frozen=True)
class SnapshotWindow:
    """Daily snapshots stamped at midnights start+1d … start+n_days (each covers events strictly before it)."""

    start: pd.Timestamp
    n_days: int

    def stamps(self) -> pd.DatetimeIndex:
        """Snapshot timestamps, one per day, UTC."""
        return pd.date_range(self.start + pd.Timedelta(days=1), periods=self.n_days, freq="D", tz="UTC")


def _day_index(ts: pd.Series, start: pd.Timestamp) -> np.ndarray:
    return ((ts - start) // pd.Timedelta(days=1)).to_numpy(dtype=np.int64)


def user_activity_snapshots(events: pd.DataFrame, user_ids: np.ndarray, window: SnapshotWindow) -> pd.DataFrame:
    """Daily activity features for every user in `user_ids` (dense: one row per user per day).

    `events` are accepted events (see `feature_repo.contracts`); events outside the window are ignored.
    """
    start = pd.Timestamp(window.start).tz_convert("UTC")
    n_users, n_days = len(user_ids), window.n_days
    index = pd.Index(user_ids)
    day = _day_index(events["ts"], start)
    row = index.get_indexer(events["user_id"].to_numpy(dtype=np.int64))
    keep = (day >= 0) & (day < n_days) & (row >= 0)
    ev = events.loc[keep]
    day, row = day[keep], row[keep]
    etype = ev["event_type"].to_numpy()

    def daily(mask: np.ndarray, values: np.ndarray | float = 1.0) -> np.ndarray:
        out = np.zeros((n_users, n_days))
        vals = values[mask] if isinstance(values, np.ndarray) else values
        np.add.at(out, (row[mask], day[mask]), vals)
        return out

    is_view, is_purchase, is_exposure = etype == "page_view", etype == "purchase", etype == "promo_exposure"
    price = ev["price"].to_numpy(dtype=float, na_value=0.0)
    revenue = ev["revenue"].to_numpy(dtype=float, na_value=0.0)
    views, purchases = daily(is_view), daily(is_purchase)
    cum_views, cum_purchases = views.cumsum(1), purchases.cumsum(1)
    cum_revenue = daily(is_purchase, revenue).cumsum(1)
    cum_viewed_price = daily(is_view, price).cumsum(1)
    cum_mobile_views = daily(is_view & (ev["device"].to_numpy() == "mobile")).cumsum(1)
    category = ev["category_id"].to_numpy(dtype=float, na_value=-1).astype(np.int64)
    cum_cat = np.stack([daily(is_view & (category == c)).cumsum(1) for c in range(N_CATEGORIES)])

    stamps = window.stamps()
    seconds_to_stamp = (stamps - start).total_seconds().to_numpy()
    event_seconds = (ev["ts"] - start).dt.total_seconds().to_numpy()

    def days_since_last(mask: np.ndarray) -> np.ndarray:
        last = np.full((n_users, n_days), -np.inf)
        np.maximum.at(last, (row[mask], day[mask]), event_seconds[mask])
        last = np.maximum.accumulate(last, axis=1)
        return np.minimum((seconds_to_stamp[None, :] - last) / 86400.0, RECENCY_CAP_DAYS)

    def decayed(daily_counts: np.ndarray) -> np.ndarray:
        z = np.zeros_like(daily_counts)
        acc = np.zeros(n_users)
        for d in range(n_days):
            acc = DECAY_PER_DAY * acc + daily_counts[:, d]
            z[:, d] = acc
        return z

    with np.errstate(invalid="ignore", divide="ignore"):
        columns = {
            "days_since_last_visit": days_since_last(is_view | is_exposure),
            "days_since_last_purchase": days_since_last(is_purchase),
            "page_views_total": cum_views,
            "purchases_total": cum_purchases,
            "revenue_total": cum_revenue,
            "avg_order_value": np.where(cum_purchases > 0, cum_revenue / cum_purchases, 0.0),
            "avg_viewed_price": np.where(cum_views > 0, cum_viewed_price / cum_views, 0.0),
            "mobile_view_share": np.where(cum_views > 0, cum_mobile_views / cum_views, 0.0),
            "activity_decayed": decayed(views),
            "purchases_decayed": decayed(purchases),
            "exposures_decayed": decayed(daily(is_exposure)),
        }
        for c in range(N_CATEGORIES):
            columns[f"category_affinity_{c}"] = np.where(cum_views > 0, cum_cat[c] / cum_views, 0.0)

    frame = pd.DataFrame({name: columns[name].ravel().astype(np.float32) for name in ACTIVITY_FEATURES})
    frame.insert(0, "user_id", np.repeat(np.asarray(user_ids, dtype=np.int64), n_days))
    frame.insert(1, "event_timestamp", np.tile(stamps.to_numpy(), n_users))
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame


def user_profile_rows(users: pd.DataFrame) -> pd.DataFrame:
    """Profile features from the CRM table, stamped at sign-up: region and device as codes, consent as 0/1."""
    region = pd.Categorical(users["region"], categories=REGIONS)
    device = pd.Categorical(users["device"], categories=DEVICES)
    if (region.codes < 0).any() or (device.codes < 0).any():
        bad = sorted(set(users["region"][region.codes < 0]) | set(users["device"][device.codes < 0]))
        raise ValueError(f"unknown region/device values {bad}; known regions {REGIONS}, devices {DEVICES}")
    return pd.DataFrame(
        {
            "user_id": users["user_id"].to_numpy(dtype=np.int64),
            "event_timestamp": pd.to_datetime(users["signup_ts"], utc=True),
            "region_code": region.codes.astype(np.int64),
            "is_mobile": (device.codes == DEVICES.index("mobile")).astype(np.int64),
            "consent_marketing": users["consent_marketing"].astype(bool).astype(np.int64).to_numpy(),
        }
    )
