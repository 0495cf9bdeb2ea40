"""The closed-loop driver: the simulated shop's visitors ask the real decision service, and answer what it served.

See `simulator.closed_loop` for the loop, the clock and what is delivered when.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from simulator.closed_loop.client import DecisionServiceClient, ServiceClockError, ServiceError
from simulator.closed_loop.sessions import (
    DayPlan, day_start, from_ms, plan_day, respond, session_events, to_ms,
)
from simulator.events import MS_PER_DAY
from simulator.world import Shop

DECISION_COLUMNS: tuple[str, ...] = (
    "session_id", "user_id", "ts", "decided_at", "surface", "decision_id", "action", "propensity", "fallback",
    "model_version", "converted", "item_id", "revenue", "delay_hours", "purchase_ts",
)
"""Columns of DayLog.decisions: one row per session, in session order."""

DUPLICATE_RULE = "event_id.unique"
"""The rule /v1/events reports for a replayed event id: counted as a duplicate, not as quarantined."""


class ClockOrderError(ValueError):
    """A day or instant earlier than where the driver has already moved the service's clock."""


@dataclass
class Deliveries:
    """What the driver posted while moving the clock, and how the service answered the events."""

    outcomes_posted: int = 0
    events_posted: int = 0
    events_accepted: int = 0
    events_quarantined: int = 0  # refused by a contract rule (kept in the service's quarantine stream)
    events_duplicate: int = 0  # refused as a replay of an event id already applied
    quarantined_by_rule: dict[str, int] = field(default_factory=dict)
    event_calls: int = 0
    clock_moves: int = 0

    def add(self, other: Deliveries) -> None:
        """Add another delivery's counts to these."""
        for name in ("outcomes_posted", "events_posted", "events_accepted", "events_quarantined", "events_duplicate",
                     "event_calls", "clock_moves"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for rule, n in other.quarantined_by_rule.items():
            self.quarantined_by_rule[rule] = self.quarantined_by_rule.get(rule, 0) + n


@dataclass(eq=False)
class DayLog:
    """One simulated day: each session's decision and drawn response, and everything posted while the day ran."""

    day: date
    decisions: pd.DataFrame  # DECISION_COLUMNS, one row per session
    fallbacks: dict[str, int]  # decisions by fallback reason (the policy ran for the rest)
    delivered: Deliveries  # outcomes and events posted during the day (earlier days' purchases included)
    purchases_pending: int  # purchases drawn so far whose time is after the day's end
    events_pending: int  # raw events drawn so far whose time is after the day's end
    clock: datetime  # the service's clock when the day ended (the next midnight)

    @property
    def n_decisions(self) -> int:
        """Decisions asked for (= sessions of the day)."""
        return len(self.decisions)

    def summary(self) -> dict[str, Any]:
        """Counts of the day as plain numbers (for printing and reports)."""
        d = self.decisions
        return {
            "day": self.day.isoformat(), "decisions": self.n_decisions, "fallbacks": dict(self.fallbacks),
            "actions": {str(a): int(n) for a, n in d["action"].value_counts().sort_index().items()},
            "conversions": int(d["converted"].sum()), "revenue": round(float(d["revenue"].sum()), 2),
            "outcomes_posted": self.delivered.outcomes_posted, "events_posted": self.delivered.events_posted,
            "events_accepted": self.delivered.events_accepted, "events_quarantined": self.delivered.events_quarantined,
            "events_duplicate": self.delivered.events_duplicate,
            "quarantined_by_rule": dict(self.delivered.quarantined_by_rule),
            "purchases_pending": self.purchases_pending, "events_pending": self.events_pending,
        }


Progress = Callable[[date, int, int], None]
"""progress(day, sessions decided so far, sessions of the day), called after each clock step with decisions."""


class ClosedLoopDriver:
    """Runs simulated days against a decision service: the service decides, the simulator's ground truth responds."""

    def __init__(
        self,
        shop: Shop,
        client: DecisionServiceClient,
        surface: str = "home",
        seed: int | None = None,
        clock_step: timedelta = timedelta(minutes=15),
        events: bool = True,
        candidates: Sequence[str] | None = None,
        progress: Progress | None = None,
    ):
        step_ms = clock_step // timedelta(milliseconds=1) if isinstance(clock_step, timedelta) else 0
        if step_ms <= 0 or timedelta(milliseconds=step_ms) != clock_step or MS_PER_DAY % step_ms:
            raise ValueError(f"clock_step must be a positive whole number of milliseconds that divides a day "
                             f"(e.g. timedelta(minutes=15)), got {clock_step!r}")
        self.shop = shop
        self.client = client
        self.surface = surface
        self.seed = shop.config.seed if seed is None else int(seed)
        self.clock_step = clock_step
        self.events = events
        self.candidates = None if candidates is None else list(candidates)
        self.progress = progress
        self._step_ms = step_ms
        self._now_ms: int | None = None  # the service's clock as this driver last set (or read) it
        self._sequence = itertools.count()  # ties in time are delivered in the order they were drawn
        self._pending_events: list[tuple[int, int, dict[str, Any]]] = []  # heap of (ts ms, seq, event)
        self._pending_outcomes: list[tuple[int, int, str, float]] = []  # heap of (ts ms, seq, decision_id, revenue)

    @property
    def now(self) -> datetime | None:
        """The service's clock as the driver last moved it (None before the driver has used the service)."""
        return None if self._now_ms is None else from_ms(self._now_ms)

    @property
    def pending_purchases(self) -> int:
        """Purchases drawn whose outcome has not been posted yet (their time has not come)."""
        return len(self._pending_outcomes)

    @property
    def pending_events(self) -> int:
        """Raw events drawn that have not been posted yet (their time has not come)."""
        return len(self._pending_events)

    def run_day(self, day: date) -> DayLog:
        """Ask for a decision per session of `day` at its clock step, draw the responses, deliver what falls due."""
        start_ms = to_ms(day_start(day))
        now_ms = self._clock_ms()
        if start_ms < now_ms:
            next_day = from_ms(now_ms + MS_PER_DAY - 1).date()
            raise ClockOrderError(
                f"run_day({day}) starts at {from_ms(start_ms).isoformat()}, but the service's clock is already at "
                f"{from_ms(now_ms).isoformat()} and only moves forward: run days in order (the next day that can run "
                f"is {next_day}), or restart the service with HYPERLIFT_SERVING_NOW at or before {day}"
            )
        plan = plan_day(self.shop, day, self.seed)
        delivered = Deliveries()
        rows: list[dict[str, Any]] = []
        steps = plan.ts_ms - plan.ts_ms % self._step_ms  # each session's clock step (sessions are sorted by time)
        bounds = np.flatnonzero(np.diff(steps)) + 1
        for group in np.split(np.arange(len(plan)), bounds) if len(plan) else []:
            step_ms = int(steps[group[0]])
            delivered.add(self.deliver_until(from_ms(step_ms)))
            rows.extend(self._serve(plan, int(k), step_ms) for k in group)
            if self.progress is not None:
                self.progress(day, len(rows), len(plan))
        delivered.add(self.deliver_until(from_ms(start_ms + MS_PER_DAY)))
        frame = pd.DataFrame(rows, columns=list(DECISION_COLUMNS)) if rows else _empty_decisions()
        frame = _typed(frame)
        fallbacks = Counter(f for f in frame["fallback"] if f is not None)
        return DayLog(day, frame, dict(sorted(fallbacks.items())), delivered, self.pending_purchases,
                      self.pending_events, from_ms(self._clock_ms()))

    def deliver_until(self, instant: datetime) -> Deliveries:
        """Move the clock to `instant`, stopping at each clock step where purchases or events fall due to post them."""
        target = to_ms(instant)
        now_ms = self._clock_ms()
        if target < now_ms:
            raise ClockOrderError(f"cannot deliver until {instant.isoformat()}: the service's clock is already at "
                                  f"{from_ms(now_ms).isoformat()} and only moves forward")
        delivered = Deliveries()
        while (due := self._earliest_due()) is not None and due <= target:
            # The first clock step at or after the earliest due time (never before now, never past the target).
            stop = min(max(-(-due // self._step_ms) * self._step_ms, self._clock_ms()), target)
            delivered.clock_moves += self._move_to(stop)
            delivered.add(self._deliver_due(stop))
        delivered.clock_moves += self._move_to(target)
        return delivered

    def _clock_ms(self) -> int:
        """The service's clock in epoch ms; read from the service once, refusing a wall-clock service."""
        if self._now_ms is None:
            now = self.client.service_clock()
            if now is None:
                raise ServiceClockError(
                    "the decision service runs on the wall clock, so the closed loop cannot drive its time: start it "
                    "with HYPERLIFT_SERVING_NOW=<ISO-8601 instant at or before the first simulated day> (one worker)"
                )
            self._now_ms = to_ms(now)
        return self._now_ms

    def _move_to(self, ms: int) -> int:
        """Move the service's clock forward to `ms` (no call when it is there already); 1 if it moved."""
        if ms <= self._clock_ms():
            return 0
        self.client.advance_clock(from_ms(ms))
        self._now_ms = ms
        return 1

    def _earliest_due(self) -> int | None:
        """The time (epoch ms) of the earliest pending event or purchase, or None."""
        heads = [q[0][0] for q in (self._pending_events, self._pending_outcomes) if q]
        return min(heads) if heads else None

    def _deliver_due(self, now_ms: int) -> Deliveries:
        """Post every event (in time order, batched) and purchase outcome whose time is at or before `now_ms`."""
        delivered = Deliveries()
        batch = []
        while self._pending_events and self._pending_events[0][0] <= now_ms:
            batch.append(heapq.heappop(self._pending_events)[2])
        if batch:
            delivered.add(self._post_events(batch))
        while self._pending_outcomes and self._pending_outcomes[0][0] <= now_ms:
            ts_ms, _, decision_id, revenue = heapq.heappop(self._pending_outcomes)
            self.client.post_outcome(decision_id, revenue, from_ms(ts_ms))
            delivered.outcomes_posted += 1
        return delivered

    def _post_events(self, batch: list[dict[str, Any]]) -> Deliveries:
        """Post a batch of raw events and account for every one: in = accepted + quarantined + duplicate."""
        answer = self.client.post_events(batch)
        rules = Counter(r["rule"] for r in answer["rejected"])
        duplicate = rules.pop(DUPLICATE_RULE, 0)
        delivered = Deliveries(events_posted=len(batch), events_accepted=int(answer["accepted"]),
                               events_quarantined=sum(rules.values()), events_duplicate=duplicate,
                               quarantined_by_rule=dict(sorted(rules.items())), event_calls=int(answer.get("calls", 1)))
        if delivered.events_accepted + delivered.events_quarantined + delivered.events_duplicate != len(batch):
            raise ServiceError(
                f"POST /v1/events accounted for {delivered.events_accepted} accepted + {delivered.events_quarantined} "
                f"quarantined + {duplicate} duplicate of {len(batch)} events posted: every event must be accepted or "
                "refused with a rule; check the service's /v1/events answer"
            )
        return delivered

    def _serve(self, plan: DayPlan, k: int, step_ms: int) -> dict[str, Any]:
        """Session k: ask the service, draw the response to the served action, queue its events and purchase."""
        user = int(plan.user_id[k])
        body = self.client.decide(user, self.surface, candidates=self.candidates)
        if not body.get("actions"):
            raise ServiceError(f"POST /v1/decisions for user {user} returned no action: {body}")
        first = body["actions"][0]  # the first slot is what the visitor is shown first; its response is drawn
        action, propensity = str(first["action_id"]), float(first["propensity"])
        response = respond(self.shop, self.seed, plan.index, k, user, int(plan.ts_ms[k]), action)
        if response.converted:
            heapq.heappush(self._pending_outcomes,
                           (response.purchase_ts_ms, next(self._sequence), body["decision_id"], response.revenue))
        if self.events:
            for ts_ms, event in session_events(self.shop, plan, k, response, propensity, self.surface, self.seed):
                heapq.heappush(self._pending_events, (ts_ms, next(self._sequence), event))
        model = body.get("model") or {}
        return {
            "session_id": plan.session_id(k, self.seed), "user_id": user, "ts": int(plan.ts_ms[k]),
            "decided_at": step_ms, "surface": self.surface, "decision_id": body["decision_id"], "action": action,
            "propensity": propensity, "fallback": body.get("fallback"), "model_version": model.get("version"),
            "converted": response.converted, "item_id": response.item_id if response.converted else None,
            "revenue": response.revenue, "delay_hours": response.delay_hours,
            "purchase_ts": response.purchase_ts_ms if response.converted else None,
        }


def _empty_decisions() -> pd.DataFrame:
    """A decisions frame with no rows."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in DECISION_COLUMNS})


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """DECISION_COLUMNS with their dtypes: times as datetime64[ms, UTC], ids as Int64, flags as bool."""
    out = frame.copy()
    for name in ("ts", "decided_at", "purchase_ts"):
        out[name] = pd.to_datetime(pd.array(out[name], dtype="Int64"), unit="ms", utc=True)
    out["user_id"] = out["user_id"].astype(np.int64)
    out["item_id"] = pd.array(out["item_id"], dtype="Int64")
    out["converted"] = out["converted"].astype(bool)
    for name in ("propensity", "revenue", "delay_hours"):
        out[name] = out[name].astype(np.float64)
    for name in ("session_id", "surface", "decision_id", "action", "fallback", "model_version"):
        out[name] = out[name].astype(object)
    return out
