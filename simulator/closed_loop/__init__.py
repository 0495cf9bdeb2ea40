"""The closed loop: the simulated shop's visitors ask the real decision service, and the simulator answers.

Per simulated day d (``ClosedLoopDriver.run_day``):

1. **Arrivals** (`sessions.plan_day`). Sessions per user ~ Poisson(sessions_per_user_day · activity_u) at uniform
   times of the day, 1–6 page views each, as `simulator.events` draws them; seeded per day, so a re-run is the
   same day.
2. **The clock.** The service runs on a simulated clock (``HYPERLIFT_SERVING_NOW``) that only
   ``POST /v1/admin/clock`` moves, forward only. The driver moves it along a grid of ``clock_step`` (15 min by
   default; it must divide a day, so the grid starts at every midnight UTC): a session starting at t is decided
   with the clock at ⌊t / step⌋·step, the trace's ``ts``. Before a step's decisions the driver posts everything
   whose time has come (time ≤ the clock): raw events through ``POST /v1/events`` (batched: ≤ 500 events and
   ≤ 64 kB per call) and purchases through ``POST /v1/outcomes``. It stops only at steps where something happens
   (decisions, or something falls due); between them no request reaches the service, so nothing can tell.
   An event is posted at the first step at or after its own time: never earlier (the event intake refuses times
   more than 5 min after its clock) and at most one step (≤ a day) late, well inside the 2-day watermark.
3. **Decisions.** One ``POST /v1/decisions`` per session, in time order, over one keep-alive connection; the
   first slot's action and propensity are what the visitor is shown. Users without consent go through the service
   too (it answers the neutral action).
4. **Responses** (`sessions.respond`). The simulator draws the session's outcome for the *served* action from its
   ground truth, P(buy) = sigmoid(b_u + effect(u, a)), revenue = price_i · (1 − d_a·[a covers i]), delay
   D ~ the shop's delay model for a (``late_weibull``: Weibull per action), on one random stream per session
   (``[seed, 6, d, k]``): the draws never depend on HTTP timing, and the same seed with the same answers from the
   service gives the same day, bit for bit.
5. **Delivery.** The purchase lands at session start + D: then its outcome is posted (``decision_id``, revenue,
   ``ts`` = the purchase's own time) and, with ``events=True``, its ``purchase`` event. The session's
   ``promo_exposure`` (served action, logged propensity: it feeds ``exposures_decayed`` and the latest visit),
   page views and add_to_cart are posted at their own times, so the streaming features move as the day goes.
6. **End of day.** The clock moves to the next midnight delivering what is due; purchases later than that stay
   queued for the next ``run_day`` or ``deliver_until`` (which lets the attribution windows close).

Purchases later than the attribution window (72 h after the decision) are posted like the others, as outcomes
and as events: they happened. The outcome join (`training.outcome_join`) refuses them
(``decision_id_outside_window``); the window is the platform's rule, not the shop's. The join measures the window
from the decision's ``ts`` (the clock step), up to one step before the session.

Nothing in the driver reads the model; nothing in the service reads the simulator's truth: they meet only over
HTTP. `DayLog` holds each session's decision and drawn response and the counts of what was posted; every event
posted is accounted for as accepted, quarantined (by rule) or duplicate, as the service answered.
"""

from simulator.closed_loop.client import (
    MAX_BODY_BYTES, MAX_EVENTS_PER_CALL, DecisionServiceClient, ServiceClient, ServiceClockError, ServiceError,
)
from simulator.closed_loop.driver import DECISION_COLUMNS, ClockOrderError, ClosedLoopDriver, DayLog, Deliveries
from simulator.closed_loop.sessions import DayPlan, SessionResponse, plan_day, respond, session_events

__all__ = [
    "DECISION_COLUMNS",
    "MAX_BODY_BYTES",
    "MAX_EVENTS_PER_CALL",
    "ClockOrderError",
    "ClosedLoopDriver",
    "DayLog",
    "DayPlan",
    "DecisionServiceClient",
    "Deliveries",
    "ServiceClient",
    "ServiceClockError",
    "ServiceError",
    "SessionResponse",
    "plan_day",
    "respond",
    "session_events",
]
