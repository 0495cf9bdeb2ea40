"""Pure feature transforms: one definition of every user feature, called by the batch assets (and later streaming).

Events are first folded into exact integer *tiles* per (user, event day) (`event_tiles`, `merge_tiles`); features
are a deterministic function of the tiles (`snapshots_from_tiles`). Tiles merge in any order, so duplicates removed
upstream, shuffled arrival and late events inside the watermark all give the same features.

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


US_PER_DAY = 86_400_000_000
"""Microseconds per day: event times are kept as integer µs since the Unix epoch, days as integer days since it."""

MICROS = 1_000_000
"""Money is summed in integer micro-units (10⁻⁶ of the currency), so sums are exact whatever the event order."""

TILE_SUMS: tuple[str, ...] = (
    "views", "purchases", "exposures", "mobile_views", "revenue_micros", "viewed_price_micros",
    *(f"category_views_{c}" for c in range(N_CATEGORIES)),
)
"""Additive integer aggregates of a tile: merging two tiles of the same user and day adds them."""

TILE_MAXES: tuple[str, ...] = ("last_visit_us", "last_purchase_us")
"""Latest event time (µs since the epoch, -1 for none) of a tile: merging two tiles takes the maximum."""

TILE_KEY = ("user_id", "day")
TILE_COLUMNS = (*TILE_KEY, *TILE_SUMS, *TILE_MAXES)


def _micros(values: pd.Series) -> np.ndarray:
    return np.rint(values.to_numpy(dtype=float, na_value=0.0) * MICROS).astype(np.int64)


def event_contributions(events: pd.DataFrame) -> pd.DataFrame:
    """What each accepted event adds to its (user, event day) tile, one row per event in the input's order."""
    ts_us = pd.to_datetime(events["ts"], utc=True).dt.as_unit("us").astype("int64").to_numpy(dtype=np.int64)
    etype = events["event_type"].to_numpy(dtype=object)
    is_view, is_purchase, is_exposure = etype == "page_view", etype == "purchase", etype == "promo_exposure"
    category = events["category_id"].to_numpy(dtype=float, na_value=-1).astype(np.int64)
    device = events["device"].to_numpy(dtype=object, na_value=None)  # optional: <NA> would not compare
    parts = {
        "user_id": events["user_id"].to_numpy(dtype=np.int64),
        "day": np.floor_divide(ts_us, US_PER_DAY),
        "views": is_view.astype(np.int64),
        "purchases": is_purchase.astype(np.int64),
        "exposures": is_exposure.astype(np.int64),
        "mobile_views": (is_view & (device == "mobile")).astype(np.int64),
        "revenue_micros": np.where(is_purchase, _micros(events["revenue"]), 0),
        "viewed_price_micros": np.where(is_view, _micros(events["price"]), 0),
        **{f"category_views_{c}": (is_view & (category == c)).astype(np.int64) for c in range(N_CATEGORIES)},
        "last_visit_us": np.where(is_view | is_exposure, ts_us, -1),
        "last_purchase_us": np.where(is_purchase, ts_us, -1),
    }
    return pd.DataFrame(parts)


def event_tiles(events: pd.DataFrame) -> pd.DataFrame:
    """Aggregate accepted events into one integer tile per (user, event day).

    Tiles are exact (integers and maxima) and merge by `merge_tiles` in any order and grouping, so features derived
    from them are identical whatever order, batching or partitioning the events came in. Deduplication by
    `event_id` happens before (the contracts' validation); a tile cannot tell a duplicate from a second event.
    """
    return merge_tiles(event_contributions(events))


def merge_tiles(*frames: pd.DataFrame) -> pd.DataFrame:
    """Merge tiles (or per-event contributions) by (user, day): sums add, maxima take the maximum; sorted by key."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=np.int64) for c in TILE_COLUMNS})
    grouped = pd.concat(frames, ignore_index=True).groupby(list(TILE_KEY), sort=True)
    merged = grouped[list(TILE_SUMS)].sum().join(grouped[list(TILE_MAXES)].max())
    return merged.reset_index()[list(TILE_COLUMNS)].astype(np.int64)


def snapshots_from_tiles(tiles: pd.DataFrame, user_ids: np.ndarray, stamps: pd.DatetimeIndex) -> pd.DataFrame:
    """Activity features of every user in `user_ids` at each stamp in `stamps` (dense: one row per user and stamp).

    The row stamped T summarises every event with ts < T: the tiles of the days up to the day of T − 1 µs. For a
    midnight that is the days before T's day (the daily snapshots); for any other T (the streaming path's "now")
    the caller passes tiles whose day of T holds only events before T. Cumulative values are exact integer sums;
    the decayed accumulators fold z_d = λ·z_{d-1} + x_d over days in ascending order, one fixed sequence of float
    operations, so equal tiles always give bit-identical features.
    """
    stamps = pd.DatetimeIndex(stamps).tz_convert("UTC")
    stamp_us = stamps.as_unit("us").asi8.astype(np.int64)
    last_days = (stamp_us - 1) // US_PER_DAY  # the last day each stamp covers
    n_users = len(user_ids)
    rows = pd.Index(np.asarray(user_ids, dtype=np.int64)).get_indexer(tiles["user_id"].to_numpy(dtype=np.int64))
    tiles = tiles.loc[rows >= 0]
    rows = rows[rows >= 0]
    tile_days = tiles["day"].to_numpy(dtype=np.int64)
    first_day = int(min(tile_days.min(initial=last_days.min()), last_days.min()))
    n_days = int(last_days.max() - first_day + 1)  # days first_day … the last day the latest stamp covers
    keep = tile_days < first_day + n_days
    tiles, rows, col = tiles.loc[keep], rows[keep], tile_days[keep] - first_day
    take = last_days - first_day  # the last day each stamp covers, as a column of the daily arrays

    def daily(name: str) -> np.ndarray:
        out = np.zeros((n_users, n_days), dtype=np.int64)
        np.add.at(out, (rows, col), tiles[name].to_numpy(dtype=np.int64))
        return out

    def cumulative(name: str) -> np.ndarray:
        return daily(name).cumsum(axis=1)[:, take]

    def latest(name: str) -> np.ndarray:
        out = np.full((n_users, n_days), -1, dtype=np.int64)
        np.maximum.at(out, (rows, col), tiles[name].to_numpy(dtype=np.int64))
        return np.maximum.accumulate(out, axis=1)[:, take]

    def decayed(name: str) -> np.ndarray:
        counts = daily(name).astype(np.float64)
        z, acc = np.empty_like(counts), np.zeros(n_users)
        for d in range(n_days):
            acc = DECAY_PER_DAY * acc + counts[:, d]
            z[:, d] = acc
        return z[:, take]

    def days_since(name: str) -> np.ndarray:
        last = latest(name)
        elapsed = (stamp_us[None, :] - last) / US_PER_DAY
        return np.where(last < 0, RECENCY_CAP_DAYS, np.minimum(elapsed, RECENCY_CAP_DAYS))

    views, purchases = cumulative("views"), cumulative("purchases")
    revenue = cumulative("revenue_micros") / MICROS
    with np.errstate(invalid="ignore", divide="ignore"):
        columns = {
            "days_since_last_visit": days_since("last_visit_us"),
            "days_since_last_purchase": days_since("last_purchase_us"),
            "page_views_total": views,
            "purchases_total": purchases,
            "revenue_total": revenue,
            "avg_order_value": np.where(purchases > 0, revenue / purchases, 0.0),
            "avg_viewed_price": np.where(views > 0, cumulative("viewed_price_micros") / MICROS / views, 0.0),
            "mobile_view_share": np.where(views > 0, cumulative("mobile_views") / views, 0.0),
            "activity_decayed": decayed("views"),
            "purchases_decayed": decayed("purchases"),
            "exposures_decayed": decayed("exposures"),
        }
        for c in range(N_CATEGORIES):
            columns[f"category_affinity_{c}"] = np.where(views > 0, cumulative(f"category_views_{c}") / views, 0.0)

    frame = pd.DataFrame({name: columns[name].ravel().astype(np.float32) for name in ACTIVITY_FEATURES})
    frame.insert(0, "user_id", np.repeat(np.asarray(user_ids, dtype=np.int64), len(stamps)))
    frame.insert(1, "event_timestamp", pd.DatetimeIndex(np.tile(stamps.tz_localize(None).to_numpy(), n_users)).tz_localize("UTC"))
    return frame


def user_activity_snapshots(events: pd.DataFrame, user_ids: np.ndarray, window: SnapshotWindow) -> pd.DataFrame:
    """Daily activity features for every user in `user_ids` (dense: one row per user per day of the window).

    `events` are accepted, deduplicated events (see `feature_repo.contracts`); each snapshot covers all of them
    with ts before its stamp.
    """
    return snapshots_from_tiles(event_tiles(events), user_ids, window.stamps())


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
