"""Pure feature transforms: one definition of every user feature, called by the batch assets (and later streaming).

Events are first folded into exact integer *tiles* per (user, event day) (`event_tiles`, `merge_tiles`); features
are a deterministic function of the tiles (`snapshots_from_tiles`). Tiles merge in any order, so duplicates removed
upstream, shuffled arrival and late events inside the watermark all give the same features.

A user's days that can no longer change may be folded into one running tile (`fold_tiles`): their sums and maxima,
and the decayed accumulators' float64 values at the fold day. Features from a fold and the later tiles are bit for
bit those of the unfolded tiles, for stamps after the fold day; the streaming store keeps its state per user
bounded this way (`feature_repo.tile_fold`).

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

DECAYED: dict[str, str] = {
    "activity_decayed": "views", "purchases_decayed": "purchases", "exposures_decayed": "exposures",
}
"""Decayed features and the tile sum each accumulates."""

FOLD_DAY = "fold_day"
FOLD_PREFIX_Z = "z_"
FOLD_DECAYED: tuple[str, ...] = tuple(FOLD_PREFIX_Z + c for c in DECAYED.values())
"""The decayed accumulators of a fold, float64, at its fold day."""
FOLD_COLUMNS = ("user_id", FOLD_DAY, *TILE_SUMS, *TILE_MAXES, *FOLD_DECAYED)
"""A running tile (`fold_tiles`): one per user, standing for every day through `fold_day` — the sums and maxima
of those days and the decayed accumulators' float64 values at `fold_day`."""
FOLD_DTYPES: dict[str, type] = {c: np.float64 if c in FOLD_DECAYED else np.int64 for c in FOLD_COLUMNS}


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


def snapshots_from_tiles(
    tiles: pd.DataFrame, user_ids: np.ndarray, stamps: pd.DatetimeIndex, folds: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Activity features of every user in `user_ids` at each stamp in `stamps` (dense: one row per user and stamp).

    The row stamped T summarises every event with ts < T: the tiles of the days up to the day of T − 1 µs. For a
    midnight that is the days before T's day (the daily snapshots); for any other T (the streaming path's "now")
    the caller passes tiles whose day of T holds only events before T. Cumulative values are exact integer sums;
    the decayed accumulators fold z_d = λ·z_{d-1} + x_d over days in ascending order, one fixed sequence of float
    operations, so equal tiles always give bit-identical features. `folds` (`fold_tiles`) are running tiles that
    stand for a user's days through its fold day: the features are bit-identical to those of the unfolded tiles,
    for stamps after the fold day only (an earlier stamp is refused).
    """
    stamps = pd.DatetimeIndex(stamps).tz_convert("UTC")
    state = _tile_state(tiles, folds, user_ids, stamps)
    n_users = len(user_ids)
    stamp_us = stamps.as_unit("us").asi8.astype(np.int64)

    def days_since(name: str) -> np.ndarray:
        last = state[name]
        elapsed = (stamp_us[None, :] - last) / US_PER_DAY
        return np.where(last < 0, RECENCY_CAP_DAYS, np.minimum(elapsed, RECENCY_CAP_DAYS))

    views, purchases = state["views"], state["purchases"]
    revenue = state["revenue_micros"] / MICROS
    with np.errstate(invalid="ignore", divide="ignore"):
        columns = {
            "days_since_last_visit": days_since("last_visit_us"),
            "days_since_last_purchase": days_since("last_purchase_us"),
            "page_views_total": views,
            "purchases_total": purchases,
            "revenue_total": revenue,
            "avg_order_value": np.where(purchases > 0, revenue / purchases, 0.0),
            "avg_viewed_price": np.where(views > 0, state["viewed_price_micros"] / MICROS / views, 0.0),
            "mobile_view_share": np.where(views > 0, state["mobile_views"] / views, 0.0),
            **{feature: state[FOLD_PREFIX_Z + column] for feature, column in DECAYED.items()},
        }
        for c in range(N_CATEGORIES):
            columns[f"category_affinity_{c}"] = np.where(views > 0, state[f"category_views_{c}"] / views, 0.0)

    frame = pd.DataFrame({name: columns[name].ravel().astype(np.float32) for name in ACTIVITY_FEATURES})
    frame.insert(0, "user_id", np.repeat(np.asarray(user_ids, dtype=np.int64), len(stamps)))
    frame.insert(1, "event_timestamp",
                 pd.DatetimeIndex(np.tile(stamps.tz_localize(None).to_numpy(), n_users)).tz_localize("UTC"))
    return frame


def empty_folds() -> pd.DataFrame:
    """A folds frame without rows, with the columns and dtypes of `FOLD_COLUMNS`."""
    return pd.DataFrame({c: np.empty(0, dtype=t) for c, t in FOLD_DTYPES.items()})


def fold_tiles(tiles: pd.DataFrame, folds: pd.DataFrame, through_day: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fold every tile of a day <= `through_day` into its user's running tile: (the tiles left, all the folds).

    A user with such tiles gets the fold day `through_day` and, at that day, its cumulative sums, latest maxima and
    the three decayed accumulators as float64 — the very values `snapshots_from_tiles` reaches there, by the same
    operations, so continuing from them is bit-identical. Other users' folds are kept as they are; a user whose
    fold day is already >= `through_day` must have no tile left at or before it (refused otherwise).
    """
    old = tiles["day"].to_numpy(dtype=np.int64) <= through_day
    users = np.unique(tiles["user_id"].to_numpy(dtype=np.int64)[old])
    stamp = pd.DatetimeIndex([pd.Timestamp((through_day + 1) * US_PER_DAY, unit="us", tz="UTC")])
    state = _tile_state(tiles.loc[old], folds, users, stamp)
    new = pd.DataFrame({"user_id": users, FOLD_DAY: np.full(len(users), through_day, dtype=np.int64),
                        **{c: state[c][:, 0] for c in FOLD_COLUMNS[2:]}})
    kept = folds.loc[~folds["user_id"].isin(users)]
    if len(kept):
        new = pd.concat([kept[list(FOLD_COLUMNS)], new], ignore_index=True).astype(FOLD_DTYPES)
        new = new.sort_values("user_id", kind="stable").reset_index(drop=True)
    return tiles.loc[~old].reset_index(drop=True), new


def _tile_state(
    tiles: pd.DataFrame, folds: pd.DataFrame | None, user_ids: np.ndarray, stamps: pd.DatetimeIndex
) -> dict[str, np.ndarray]:
    """Per user (rows) and stamp (columns): every tile sum accumulated, every maximum, and the decayed accumulators
    (`FOLD_DECAYED` names) in float64 — what the features are computed from. A fold counts as a tile on its fold
    day for sums and maxima; for the decayed accumulators it sets the user's value at its fold day, exactly."""
    stamp_us = stamps.as_unit("us").asi8.astype(np.int64)
    last_days = (stamp_us - 1) // US_PER_DAY  # the last day each stamp covers
    n_users = len(user_ids)
    index = pd.Index(np.asarray(user_ids, dtype=np.int64))
    t = _arrays(tiles, TILE_COLUMNS, index)
    f = _arrays(empty_folds() if folds is None else folds, FOLD_COLUMNS, index)
    rows, tile_days, fold_rows, fold_days = t["row"], t["day"], f["row"], f[FOLD_DAY]
    _check_folds(fold_rows, fold_days, rows, tile_days, index, stamp_us)
    # The daily arrays start at the earliest tile, stamp or fold day (a fold may be older than every tile left).
    first_day = int(min(tile_days.min(initial=last_days.min()), fold_days.min(initial=last_days.min()),
                        last_days.min()))
    n_days = int(last_days.max() - first_day + 1)  # days first_day … the last day the latest stamp covers
    keep = tile_days < first_day + n_days
    t = {name: values[keep] for name, values in t.items()}
    rows, col = t["row"], t["day"] - first_day
    fold_col = fold_days - first_day
    take = last_days - first_day  # the last day each stamp covers, as a column of the daily arrays

    def daily(name: str, with_folds: bool) -> np.ndarray:
        out = np.zeros((n_users, n_days), dtype=np.int64)
        np.add.at(out, (rows, col), t[name])
        if with_folds:
            np.add.at(out, (fold_rows, fold_col), f[name])
        return out

    def latest(name: str) -> np.ndarray:
        out = np.full((n_users, n_days), -1, dtype=np.int64)
        np.maximum.at(out, (rows, col), t[name])
        np.maximum.at(out, (fold_rows, fold_col), f[name])
        return np.maximum.accumulate(out, axis=1)[:, take]

    def decayed(name: str) -> np.ndarray:
        counts = daily(name, with_folds=False).astype(np.float64)
        start = {d: (fold_rows[fold_col == d], f[FOLD_PREFIX_Z + name][fold_col == d])
                 for d in np.unique(fold_col).tolist()}
        z, acc = np.empty_like(counts), np.zeros(n_users)
        for d in range(n_days):
            acc = DECAY_PER_DAY * acc + counts[:, d]
            if d in start:  # the fold holds z at its day, computed by this same loop: set it, bit for bit
                acc[start[d][0]] = start[d][1]
            z[:, d] = acc
        return z[:, take]

    state = {name: daily(name, with_folds=True).cumsum(axis=1)[:, take] for name in TILE_SUMS}
    state.update({name: latest(name) for name in TILE_MAXES})
    state.update({FOLD_PREFIX_Z + name: decayed(name) for name in DECAYED.values()})
    return state


def _arrays(frame: pd.DataFrame, columns: tuple[str, ...], index: pd.Index) -> dict[str, np.ndarray]:
    """The frame's columns as arrays, limited to the rows of users in `index`, with each row's user position."""
    row = index.get_indexer(frame["user_id"].to_numpy(dtype=np.int64))
    mine = row >= 0
    out = {c: frame[c].to_numpy(dtype=FOLD_DTYPES.get(c, np.int64))[mine] for c in columns}
    out["row"] = row[mine]
    return out


def _check_folds(
    fold_rows: np.ndarray, fold_days: np.ndarray, rows: np.ndarray, tile_days: np.ndarray, index: pd.Index,
    stamp_us: np.ndarray,
) -> None:
    """Refuse what a fold cannot answer: two folds of one user, a tile at or before its user's fold day, a stamp
    before a user's fold day ends."""
    if not len(fold_rows):
        return
    unique, counts = np.unique(fold_rows, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"user {index[unique[counts > 1][0]]} has more than one fold: keep one running tile per "
                         "user (fold_tiles merges them)")
    fold_of = np.full(len(index), np.iinfo(np.int64).min, dtype=np.int64)
    fold_of[fold_rows] = fold_days
    inside = tile_days <= fold_of[rows]
    if inside.any():
        i = int(np.flatnonzero(inside)[0])
        raise ValueError(
            f"user {index[rows[i]]} has a tile of day {_date(tile_days[i])} at or before its fold day "
            f"{_date(fold_of[rows[i]])}: fold it in with fold_tiles (a day is folded once it cannot change)"
        )
    latest = int(np.argmax(fold_days))
    if stamp_us.min() < (fold_days[latest] + 1) * US_PER_DAY:
        earliest = pd.Timestamp((fold_days[latest] + 1) * US_PER_DAY, unit="us", tz="UTC")
        asked = pd.Timestamp(int(stamp_us.min()), unit="us", tz="UTC")
        raise ValueError(
            f"stamp {asked.isoformat()} is before user {index[fold_rows[latest]]}'s fold: its days through "
            f"{_date(fold_days[latest])} are kept as one running tile, so its features exist for stamps from "
            f"{earliest.isoformat()} on; compute earlier stamps from the unfolded tiles (the lake's)"
        )


def _date(day: int) -> str:
    return pd.Timestamp(int(day) * US_PER_DAY, unit="us", tz="UTC").strftime("%Y-%m-%d")


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
