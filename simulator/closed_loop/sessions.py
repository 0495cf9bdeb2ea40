"""The simulator's half of a closed-loop day, with no HTTP: who visits when, what they browse, how they respond.

* ``plan_day``: sessions per user ~ Poisson(sessions_per_user_day · activity_u) at uniform times of the day, and
  each session's 1–6 page views (items from P(i | u), 2 s + Exp(40 s) apart), as `simulator.events` draws them;
  from ``default_rng([seed, STREAM_LOOP_SESSIONS, d])`` with d = days since ``config.start``. Nothing in a plan
  depends on the action served.
* ``respond``: the session's response to the action the service actually served, from the shop's ground truth
  (`simulator.response.sample_session_outcomes`: converts with p(u, a) = sigmoid(b_u + effect(u, a)), buys item
  i ~ P(i | u) for price_i · (1 − d_a·[a covers i]), after a delay D ~ the config's delay model for a), then the
  add_to_cart events.py adds (75 % of buyers at exposure + U(0.05, 0.95)·D; 5 % of the others abandon a cart
  Exp(3 min) after the exposure). Its generator is ``default_rng([seed, STREAM_LOOP_RESPONSES, d, k])`` for
  session k of day d: one stream per session, so a draw depends on the session and the served action only, never
  on the order or timing of the HTTP calls. Every action uses the same uniforms (conversion: U < p(u, a); delay:
  η_a·E^{1/k_a} of the same exponential E), so serving another action changes the outcome only as far as p(u, a),
  the discount and the delay shape differ.
* ``session_events``: the session's raw events in the contracts' union schema (`feature_repo.contracts`), with
  their times in epoch milliseconds: the promo_exposure of the served action with its logged propensity (it feeds
  ``exposures_decayed`` and the latest visit), the page views, the add_to_cart and the purchase.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np

from simulator.actions import ACTION_IDS, ACTION_INDEX
from simulator.choice import sample_items
from simulator.events import (
    ABANDONED_CART_RATE, CART_BEFORE_PURCHASE_RATE, MAX_PAGE_VIEWS, MEAN_PAGE_VIEW_GAP_MS, MIN_PAGE_VIEW_GAP_MS,
    MS_PER_DAY, MS_PER_HOUR, _within_group_cumsum,
)
from simulator.response import sample_session_outcomes
from simulator.world import Shop

# Streams of np.random.default_rng([seed, stream, ...]): world.py uses 1–2, events.py 3–4.
STREAM_LOOP_SESSIONS = 5
STREAM_LOOP_RESPONSES = 6

ABANDONED_CART_MEAN_MS = 3 * 60_000.0
"""Mean time from exposure to an abandoned add_to_cart (the literal 3 min of simulator/events.py)."""

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def day_start(day: date) -> datetime:
    """Midnight UTC at the start of `day`."""
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def to_ms(instant: datetime) -> int:
    """Epoch milliseconds of an aware datetime (exact: no float round trip)."""
    if instant.tzinfo is None:
        raise ValueError(f"instant must be timezone-aware (e.g. tzinfo=timezone.utc), got {instant!r}")
    return (instant - EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    """The aware UTC datetime of epoch milliseconds."""
    return EPOCH + timedelta(milliseconds=int(ms))


def iso_ms(ms: int) -> str:
    """ISO-8601 with milliseconds and offset, e.g. 2026-10-05T06:00:00.123+00:00 (what the contracts parse)."""
    return from_ms(ms).isoformat(timespec="milliseconds")


def day_index(shop: Shop, day: date) -> int:
    """Days from the shop's first day to `day` (the d of the random streams); days before the shop are refused."""
    index = (day - shop.config.start.astimezone(timezone.utc).date()).days
    if index < 0:
        raise ValueError(f"day {day} is before the shop's start {shop.config.start.date()}: a closed-loop day must "
                         "come after the simulated period it continues (e.g. shop.config.end.date())")
    return index


@dataclass(frozen=True, eq=False)
class DayPlan:
    """One day's sessions in time order and their page views; what a visitor does before any action is served."""

    day: date
    index: int  # days since the shop's start
    user_id: np.ndarray  # int64 (n,)
    ts_ms: np.ndarray  # int64 (n,), ascending: the session start, when the decision is asked for
    view_start: np.ndarray  # int64 (n + 1,): session k's views are view_*[view_start[k]:view_start[k + 1]]
    view_ts_ms: np.ndarray  # int64
    view_item: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.user_id)

    def session_id(self, k: int, seed: int) -> str:
        """A session id unique per driver seed, day and session: 'cl7-20261005-000042'."""
        return f"cl{seed}-{self.day:%Y%m%d}-{k:06d}"


def plan_day(shop: Shop, day: date, seed: int) -> DayPlan:
    """The day's sessions (Poisson per user at uniform times, sorted) and page views, from the day's own stream."""
    index = day_index(shop, day)
    rng = np.random.default_rng([seed, STREAM_LOOP_SESSIONS, index])
    counts = rng.poisson(shop.config.sessions_per_user_day * shop.activity)
    users = np.repeat(np.arange(shop.n_users, dtype=np.int64), counts)
    start_ms = to_ms(day_start(day)) + rng.integers(0, MS_PER_DAY, size=len(users))
    order = np.argsort(start_ms, kind="stable")  # session numbers then increase with time
    users, start_ms = users[order], start_ms[order].astype(np.int64)

    n_views = rng.integers(1, MAX_PAGE_VIEWS + 1, size=len(users))
    view_session = np.repeat(np.arange(len(users)), n_views)
    gaps = MIN_PAGE_VIEW_GAP_MS + np.round(rng.exponential(MEAN_PAGE_VIEW_GAP_MS, size=len(view_session)))
    view_ts = start_ms[view_session] + _within_group_cumsum(gaps.astype(np.int64), n_views)
    view_items = sample_items(
        rng, shop.price_sensitivity, shop.taste, shop.item_category, shop.item_price, users[view_session]
    )
    view_start = np.concatenate([[0], np.cumsum(n_views)]).astype(np.int64)
    return DayPlan(day, index, users, start_ms, view_start, view_ts.astype(np.int64), view_items.astype(np.int64))


@dataclass(frozen=True)
class SessionResponse:
    """What a visitor did after being served `action_id`; purchase fields are -1 / 0.0 / NaN without a purchase."""

    action_id: str
    converted: bool
    item_id: int
    revenue: float
    delay_hours: float
    purchase_ts_ms: int
    cart_ts_ms: int  # -1: no add_to_cart in this session
    cart_item_id: int


def respond(shop: Shop, seed: int, day: int, k: int, user_id: int, session_ts_ms: int, action_id: str) -> SessionResponse:
    """Session k of day d (days since the shop's start) answers the served action: purchase, item, revenue, delay."""
    if action_id not in ACTION_INDEX:
        raise ValueError(f"the service served {action_id!r}, which the simulated shop does not know; the shop's "
                         f"actions are {list(ACTION_IDS)} (serve a model trained on them)")
    rng = np.random.default_rng([seed, STREAM_LOOP_RESPONSES, day, k])
    user = np.array([user_id], dtype=np.int64)
    outcome = sample_session_outcomes(shop, rng, user, np.array([ACTION_INDEX[action_id]]))
    converted = bool(outcome.converted[0])
    purchase_ts, cart_ts, cart_item = -1, -1, -1
    if converted:
        # At least 1 ms, so a purchase is strictly after its exposure (as events.py).
        delay_ms = max(1, int(np.round(outcome.delay_hours[0] * MS_PER_HOUR)))
        purchase_ts = int(session_ts_ms) + delay_ms
        if rng.random() < CART_BEFORE_PURCHASE_RATE:
            cart_ts = int(session_ts_ms) + int(np.floor(rng.uniform(0.05, 0.95) * delay_ms))
            cart_item = int(outcome.item_id[0])
    elif rng.random() < ABANDONED_CART_RATE:
        cart_item = int(sample_items(rng, shop.price_sensitivity, shop.taste, shop.item_category, shop.item_price, user)[0])
        cart_ts = int(session_ts_ms) + int(np.round(rng.exponential(ABANDONED_CART_MEAN_MS)))
    return SessionResponse(
        action_id=action_id, converted=converted, item_id=int(outcome.item_id[0]), revenue=float(outcome.revenue[0]),
        delay_hours=float(outcome.delay_hours[0]), purchase_ts_ms=purchase_ts, cart_ts_ms=cart_ts,
        cart_item_id=cart_item,
    )


def session_events(
    shop: Shop, plan: DayPlan, k: int, response: SessionResponse, propensity: float, surface: str, seed: int
) -> list[tuple[int, dict[str, Any]]]:
    """(ts in epoch ms, raw event) of session k: exposure, page views, add_to_cart, purchase; ids deterministic."""
    user = int(plan.user_id[k])
    session = plan.session_id(k, seed)
    envelope = {"event_version": 1, "user_id": user, "session_id": session,
                "device": str(shop.users["device"].iat[user]), "region": str(shop.users["region"].iat[user])}

    def event(suffix: str, event_type: str, ts_ms: int, **fields: Any) -> tuple[int, dict[str, Any]]:
        body = {"event_id": f"{session}-{suffix}", "event_type": event_type, "ts": iso_ms(ts_ms), **envelope, **fields}
        return int(ts_ms), body

    def item(item_id: int) -> dict[str, Any]:
        return {"item_id": int(item_id), "category_id": int(shop.item_category[item_id]),
                "price": float(shop.item_price[item_id])}

    start = int(plan.ts_ms[k])
    events = [event("x", "promo_exposure", start, action_id=response.action_id, propensity=float(propensity),
                    surface=surface)]
    lo, hi = int(plan.view_start[k]), int(plan.view_start[k + 1])
    events += [event(f"v{j}", "page_view", int(plan.view_ts_ms[i]), **item(plan.view_item[i]))
               for j, i in enumerate(range(lo, hi))]
    if response.cart_ts_ms >= 0:
        events.append(event("c", "add_to_cart", response.cart_ts_ms, **item(response.cart_item_id)))
    if response.converted:
        events.append(event("p", "purchase", response.purchase_ts_ms, **item(response.item_id),
                            revenue=response.revenue, action_id=response.action_id))
    return events
