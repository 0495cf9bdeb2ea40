"""The raw event stream the platform ingests, plus ground truth about how it was produced.

API
---
``simulate(shop, progress=None) -> Simulation`` runs the whole period and returns:

* ``events``: the stream as the platform receives it, sorted by ts, *including* malformed rows;
* ``clean_events``: the same stream before corruption (same event ids, fully valid);
* ``sessions``: one row per session with the logged action and its sampled outcome, including
  purchases that fall after ``config.end`` (ground truth; the platform never sees this table);
* ``corruption_counts``: ``{kind: number of malformed rows injected}`` for every kind in
  ``CORRUPTION_KINDS``, so quarantine counts can be checked exactly;
* ``corrupted_rows``: positions (``row``, 0-based into ``events``) and ``kind`` of each malformed row.

``simulate_events(shop)`` is ``simulate(shop).events`` for callers that only need the stream.

Each malformed row carries exactly one defect. Six kinds modify an existing row in place
(null_user_id, negative_revenue on a purchase, unknown_event_type "pageview_v0" on a page view,
future_ts > end + 1 day, bad_propensity outside (0, 1] on a promo_exposure, null_event_id); the
seventh, duplicate_event_id, appends an exact copy of an otherwise clean row (the copy is the
malformed one: it sorts right after its original).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simulator.actions import ACTION_IDS
from simulator.choice import sample_items
from simulator.logging_policy import logging_probabilities, sample_actions
from simulator.response import sample_session_outcomes
from simulator.world import Shop

EVENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "event_type",
    "event_version",
    "ts",
    "user_id",
    "session_id",
    "item_id",
    "category_id",
    "price",
    "revenue",
    "action_id",
    "propensity",
    "surface",
    "device",
    "region",
)
EVENT_DTYPES: dict[str, str] = {
    "event_id": "object",
    "event_type": "object",
    "event_version": "int64",
    "ts": "datetime64[ns, UTC]",
    "user_id": "Int64",
    "session_id": "object",
    "item_id": "Int64",
    "category_id": "Int64",
    "price": "float64",
    "revenue": "float64",
    "action_id": "object",
    "propensity": "float64",
    "surface": "object",
    "device": "object",
    "region": "object",
}
EVENT_TYPES: tuple[str, ...] = ("page_view", "add_to_cart", "purchase", "promo_exposure")
PAGE_VIEW, ADD_TO_CART, PURCHASE, PROMO_EXPOSURE = range(len(EVENT_TYPES))
# Where on the site each event type happens, indexed like EVENT_TYPES.
SURFACES: tuple[str, ...] = ("product", "product", "checkout", "home")

CORRUPTION_KINDS: tuple[str, ...] = (
    "null_user_id",
    "negative_revenue",
    "unknown_event_type",
    "future_ts",
    "bad_propensity",
    "null_event_id",
    "duplicate_event_id",
)
UNKNOWN_EVENT_TYPE = "pageview_v0"
BAD_PROPENSITIES = np.array([0.0, -0.2, 1.25, 3.0])

# Behaviour of a session around its exposure (all times in milliseconds).
MAX_PAGE_VIEWS = 6
MEAN_PAGE_VIEW_GAP_MS = 40_000.0
MIN_PAGE_VIEW_GAP_MS = 2_000
CART_BEFORE_PURCHASE_RATE = 0.75
ABANDONED_CART_RATE = 0.05
MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000

STREAM_EVENTS = 3
STREAM_CORRUPTION = 4


@dataclass(frozen=True, eq=False)
class Simulation:
    """Output of simulate(): raw stream, clean stream, per-session ground truth and the corruption record."""

    events: pd.DataFrame
    clean_events: pd.DataFrame
    sessions: pd.DataFrame
    corruption_counts: dict[str, int]
    corrupted_rows: pd.DataFrame


@dataclass
class _Columns:
    """Per-event numeric columns accumulated day by day before the frame is built once."""

    event_type: list[np.ndarray]
    ts_ms: list[np.ndarray]
    user: list[np.ndarray]
    session: list[np.ndarray]
    item: list[np.ndarray]
    revenue: list[np.ndarray]
    action: list[np.ndarray]
    propensity: list[np.ndarray]

    def add(
        self,
        event_type: int,
        ts_ms: np.ndarray,
        user: np.ndarray,
        session: np.ndarray,
        item: np.ndarray | None = None,
        revenue: np.ndarray | None = None,
        action: np.ndarray | None = None,
        propensity: np.ndarray | None = None,
    ) -> None:
        """Append one block of events of a single type; absent fields become -1 / NaN."""
        n = len(ts_ms)
        self.event_type.append(np.full(n, event_type, dtype=np.int8))
        self.ts_ms.append(ts_ms.astype(np.int64))
        self.user.append(user.astype(np.int64))
        self.session.append(session.astype(np.int64))
        self.item.append(np.full(n, -1, np.int64) if item is None else item.astype(np.int64))
        self.revenue.append(np.full(n, np.nan) if revenue is None else revenue.astype(np.float64))
        self.action.append(np.full(n, -1, np.int64) if action is None else action.astype(np.int64))
        self.propensity.append(np.full(n, np.nan) if propensity is None else propensity.astype(np.float64))


def _ms(ts: pd.Timestamp) -> int:
    """Milliseconds since the epoch of a tz-aware timestamp."""
    return int(pd.Timestamp(ts).value // 1_000_000)


def _within_group_cumsum(values: np.ndarray, group_sizes: np.ndarray) -> np.ndarray:
    """Cumulative sum of values restarting at each group (groups are consecutive, sizes >= 1)."""
    total = np.cumsum(values)
    starts = np.cumsum(group_sizes) - group_sizes
    before = np.repeat(total[starts] - values[starts], group_sizes)
    return total - before


def _simulate_day(
    shop: Shop, day: int, probs: np.ndarray, session_offset: int, cols: _Columns
) -> dict[str, np.ndarray]:
    """Generate one day's sessions into cols and return the day's per-session ground truth."""
    config = shop.config
    # One stream per day: a day's events do not depend on how many random numbers earlier days used.
    rng = np.random.default_rng([config.seed, STREAM_EVENTS, day])
    day_start_ms = _ms(pd.Timestamp(config.start)) + day * MS_PER_DAY

    counts = rng.poisson(config.sessions_per_user_day * shop.activity)
    users = np.repeat(np.arange(shop.n_users, dtype=np.int64), counts)
    start_ms = day_start_ms + rng.integers(0, MS_PER_DAY, size=len(users))
    order = np.argsort(start_ms, kind="stable")  # session ids then increase with time
    users, start_ms = users[order], start_ms[order]
    n_sessions = len(users)
    session = session_offset + np.arange(n_sessions, dtype=np.int64)

    action, propensity = sample_actions(rng, probs[users])
    cols.add(PROMO_EXPOSURE, start_ms, users, session, action=action, propensity=propensity)

    # Page views follow the exposure within minutes; items come from the same taste model as purchases.
    n_views = rng.integers(1, MAX_PAGE_VIEWS + 1, size=n_sessions)
    view_session = np.repeat(np.arange(n_sessions), n_views)
    gaps = MIN_PAGE_VIEW_GAP_MS + np.round(rng.exponential(MEAN_PAGE_VIEW_GAP_MS, size=len(view_session)))
    view_ts = start_ms[view_session] + _within_group_cumsum(gaps.astype(np.int64), n_views)
    view_items = sample_items(
        rng, shop.price_sensitivity, shop.taste, shop.item_category, shop.item_price, users[view_session]
    )
    cols.add(PAGE_VIEW, view_ts, users[view_session], session[view_session], item=view_items)

    outcome = sample_session_outcomes(shop, rng, users, action)
    buyers = np.flatnonzero(outcome.converted)
    # At least 1 ms so a purchase is strictly after its exposure even after rounding.
    delay_ms = np.maximum(1, np.round(outcome.delay_hours[buyers] * MS_PER_HOUR)).astype(np.int64)
    purchase_ts = start_ms[buyers] + delay_ms

    # Most buyers put the item in the cart somewhere between the exposure and the purchase.
    cart_sel = rng.random(len(buyers)) < CART_BEFORE_PURCHASE_RATE
    with_cart = buyers[cart_sel]
    cart_delay = np.floor(rng.uniform(0.05, 0.95, size=len(with_cart)) * delay_ms[cart_sel]).astype(np.int64)
    cols.add(
        ADD_TO_CART,
        start_ms[with_cart] + cart_delay,
        users[with_cart],
        session[with_cart],
        item=outcome.item_id[with_cart],
    )
    # Some sessions fill a cart and leave: realistic noise for cart-based features.
    non_buyers = np.flatnonzero(~outcome.converted)
    abandon = non_buyers[rng.random(len(non_buyers)) < ABANDONED_CART_RATE]
    abandon_items = sample_items(
        rng, shop.price_sensitivity, shop.taste, shop.item_category, shop.item_price, users[abandon]
    )
    abandon_ts = start_ms[abandon] + np.round(rng.exponential(3 * 60_000.0, size=len(abandon))).astype(np.int64)
    cols.add(ADD_TO_CART, abandon_ts, users[abandon], session[abandon], item=abandon_items)

    cols.add(
        PURCHASE,
        purchase_ts,
        users[buyers],
        session[buyers],
        item=outcome.item_id[buyers],
        revenue=outcome.revenue[buyers],
        action=action[buyers],
    )

    full_purchase_ts = np.full(n_sessions, -1, dtype=np.int64)
    full_purchase_ts[buyers] = purchase_ts
    return {
        "session": session,
        "user": users,
        "ts_ms": start_ms,
        "action": action,
        "propensity": propensity,
        "converted": outcome.converted,
        "item": outcome.item_id,
        "revenue": outcome.revenue,
        "delay_hours": outcome.delay_hours,
        "purchase_ts_ms": full_purchase_ts,
    }


def _session_ids(session: np.ndarray) -> np.ndarray:
    """Deterministic session id strings 's00000001', … for integer session numbers."""
    return pd.Series(session + 1).map("s{:08d}".format).to_numpy(dtype=object)


def _to_ts(ms: np.ndarray) -> pd.DatetimeIndex:
    """Epoch milliseconds → datetime64[ns, UTC]."""
    return pd.DatetimeIndex(pd.to_datetime(ms, unit="ms", utc=True)).as_unit("ns")


def _nullable_int(values: np.ndarray) -> pd.arrays.IntegerArray:
    """int64 array with -1 meaning missing → pandas Int64."""
    return pd.arrays.IntegerArray(np.where(values < 0, 0, values).astype(np.int64), values < 0)


def _build_frame(shop: Shop, cols: _Columns, n_sessions: int) -> pd.DataFrame:
    """Concatenate the accumulated columns, drop events after config.end, sort by ts and name everything."""
    ts_ms = np.concatenate(cols.ts_ms)
    # Anything at or after the end of the period has not happened yet when the export is taken.
    keep = ts_ms < _ms(pd.Timestamp(shop.config.end))
    order = np.flatnonzero(keep)[np.argsort(ts_ms[keep], kind="stable")]

    def take(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts)[order]

    event_type = take(cols.event_type)
    user = take(cols.user)
    session = take(cols.session)
    item = take(cols.item)
    action = take(cols.action)
    n = len(order)

    session_names = _session_ids(np.arange(n_sessions, dtype=np.int64))
    item_cat = np.append(shop.item_category, -1)  # index -1 → missing category
    item_price = np.append(shop.item_price, np.nan)
    action_names = np.array(list(ACTION_IDS) + [None], dtype=object)  # index -1 → None
    devices = shop.users["device"].to_numpy(dtype=object)
    regions = shop.users["region"].to_numpy(dtype=object)

    frame = pd.DataFrame(
        {
            "event_id": pd.Series(np.arange(1, n + 1)).map("e{:09d}".format).to_numpy(dtype=object),
            "event_type": np.array(EVENT_TYPES, dtype=object)[event_type],
            "event_version": np.ones(n, dtype=np.int64),
            "ts": _to_ts(ts_ms[order]),
            "user_id": _nullable_int(user),
            "session_id": session_names[session],
            "item_id": _nullable_int(item),
            "category_id": _nullable_int(item_cat[item]),
            "price": item_price[item],
            "revenue": take(cols.revenue),
            "action_id": action_names[action],
            "propensity": take(cols.propensity),
            "surface": np.array(SURFACES, dtype=object)[event_type],
            "device": devices[user],
            "region": regions[user],
        }
    )
    return frame


def _split_evenly(total: int, k: int) -> list[int]:
    """Split total into k near-equal non-negative parts (earlier parts get the remainder)."""
    return [total // k + (1 if i < total % k else 0) for i in range(k)]


def _inject_corruption(shop: Shop, clean: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int], pd.DataFrame]:
    """Make corrupt_rate of the rows malformed (one defect per row, every kind present), deterministically."""
    config = shop.config
    rng = np.random.default_rng([config.seed, STREAM_CORRUPTION])
    n = len(clean)
    total = int(round(config.corrupt_rate * n))
    if config.corrupt_rate > 0:
        total = max(total, len(CORRUPTION_KINDS))  # every kind present, even on tiny runs
    planned = dict(zip(CORRUPTION_KINDS, _split_evenly(total, len(CORRUPTION_KINDS))))

    event_type = clean["event_type"].to_numpy()
    available = np.ones(n, dtype=bool)  # rows not yet used, so no row carries two defects

    def pick(kind: str, mask: np.ndarray | None = None) -> np.ndarray:
        candidates = np.flatnonzero(available if mask is None else available & mask)
        chosen = np.sort(rng.choice(candidates, size=min(planned[kind], len(candidates)), replace=False))
        available[chosen] = False
        return chosen

    # Type-constrained kinds first so they still find rows of their type.
    rows = {
        "negative_revenue": pick("negative_revenue", event_type == "purchase"),
        "bad_propensity": pick("bad_propensity", event_type == "promo_exposure"),
        "unknown_event_type": pick("unknown_event_type", event_type == "page_view"),
        "null_user_id": pick("null_user_id"),
        "future_ts": pick("future_ts"),
        "null_event_id": pick("null_event_id"),
        "duplicate_event_id": pick("duplicate_event_id"),
    }

    events = clean.copy()
    kind = np.full(n, None, dtype=object)
    for name, idx in rows.items():
        if name != "duplicate_event_id":
            kind[idx] = name

    col = events.columns.get_loc
    events.iloc[rows["negative_revenue"], col("revenue")] = -events["revenue"].to_numpy()[rows["negative_revenue"]]
    events.iloc[rows["bad_propensity"], col("propensity")] = rng.choice(
        BAD_PROPENSITIES, size=len(rows["bad_propensity"])
    )
    events.iloc[rows["unknown_event_type"], col("event_type")] = UNKNOWN_EVENT_TYPE
    events.iloc[rows["null_user_id"], col("user_id")] = pd.NA
    future_ms = _ms(pd.Timestamp(config.end)) + rng.integers(2 * MS_PER_DAY, 365 * MS_PER_DAY, size=len(rows["future_ts"]))
    events.iloc[rows["future_ts"], col("ts")] = _to_ts(future_ms)
    events.iloc[rows["null_event_id"], col("event_id")] = None

    duplicates = events.iloc[rows["duplicate_event_id"]]
    events = pd.concat([events, duplicates], ignore_index=True)
    kind = np.concatenate([kind, np.full(len(duplicates), "duplicate_event_id", dtype=object)])
    source = np.concatenate([np.arange(n), rows["duplicate_event_id"]])
    is_copy = np.concatenate([np.zeros(n, dtype=bool), np.ones(len(duplicates), dtype=bool)])

    # Sort by ts, then by original position, copy last: each duplicate sits right after its original
    # even when other events share the same millisecond.
    order = np.lexsort((is_copy, source, events["ts"].to_numpy(dtype="datetime64[ns]")))
    events = events.iloc[order].reset_index(drop=True)
    kind = kind[order]
    for name, dtype in EVENT_DTYPES.items():
        if str(events[name].dtype) != dtype:
            events[name] = events[name].astype(dtype)

    counts = {name: int(len(idx)) for name, idx in rows.items()}
    bad = np.flatnonzero(pd.notna(kind))
    corrupted = pd.DataFrame({"row": bad.astype(np.int64), "kind": kind[bad]})
    return events, counts, corrupted


def _sessions_frame(shop: Shop, days: list[dict[str, np.ndarray]]) -> pd.DataFrame:
    """Ground-truth session table from the per-day records."""
    cat = {key: np.concatenate([d[key] for d in days]) for key in days[0]}
    purchase_ts = cat["purchase_ts_ms"]
    action_names = np.array(ACTION_IDS, dtype=object)
    return pd.DataFrame(
        {
            "session_id": _session_ids(cat["session"]),
            "user_id": cat["user"].astype(np.int64),
            "ts": _to_ts(cat["ts_ms"]),
            "action_id": action_names[cat["action"]],
            "propensity": cat["propensity"],
            "converted": cat["converted"].astype(bool),
            "item_id": _nullable_int(cat["item"]),
            "revenue": cat["revenue"],
            "purchase_delay_hours": cat["delay_hours"],
            "purchase_ts": _to_ts(np.where(purchase_ts < 0, 0, purchase_ts)).where(purchase_ts >= 0),
        }
    )


def simulate(shop: Shop, progress: Callable[[int, int, int], None] | None = None) -> Simulation:
    """Simulate config.n_days of traffic; progress(day, n_days, sessions_so_far) is called after each day."""
    config = shop.config
    probs = logging_probabilities(shop.users)
    cols = _Columns([], [], [], [], [], [], [], [])
    days: list[dict[str, np.ndarray]] = []
    n_sessions = 0
    for day in range(config.n_days):
        record = _simulate_day(shop, day, probs, n_sessions, cols)
        days.append(record)
        n_sessions += len(record["session"])
        if progress is not None:
            progress(day + 1, config.n_days, n_sessions)
    clean = _build_frame(shop, cols, n_sessions)
    events, counts, corrupted = _inject_corruption(shop, clean)
    return Simulation(
        events=events,
        clean_events=clean,
        sessions=_sessions_frame(shop, days),
        corruption_counts=counts,
        corrupted_rows=corrupted,
    )


def simulate_events(shop: Shop) -> pd.DataFrame:
    """The raw event stream (with malformed rows), sorted by ts; see simulate() for ground truth."""
    return simulate(shop).events


def conversion_by_action(events: pd.DataFrame) -> pd.DataFrame:
    """Exposures, purchases and purchases per exposure by action_id, from a (clean) event frame."""
    exposures = events.loc[events["event_type"] == "promo_exposure", "action_id"].value_counts()
    purchases = events.loc[events["event_type"] == "purchase", "action_id"].value_counts()
    revenue = events.loc[events["event_type"] == "purchase"].groupby("action_id")["revenue"].sum()
    out = pd.DataFrame({"exposures": exposures, "purchases": purchases, "revenue": revenue})
    out = out.reindex(list(ACTION_IDS)).fillna(0.0)
    out["exposures"] = out["exposures"].astype(np.int64)
    out["purchases"] = out["purchases"].astype(np.int64)
    out["conversion_rate"] = out["purchases"] / out["exposures"].where(out["exposures"] > 0)
    out["revenue_per_exposure"] = out["revenue"] / out["exposures"].where(out["exposures"] > 0)
    out.index.name = "action_id"
    return out


__all__ = [
    "CORRUPTION_KINDS",
    "EVENT_COLUMNS",
    "EVENT_DTYPES",
    "EVENT_TYPES",
    "Simulation",
    "conversion_by_action",
    "simulate",
    "simulate_events",
]
