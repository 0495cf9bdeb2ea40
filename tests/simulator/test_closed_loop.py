"""The closed loop: simulated visitors ask the real decision service (Redis, Feast, MLflow, in-process), the simulator
answers the served action from its ground truth, and purchases and events come back through the service's APIs.

The driver's own rules (clock order, delivery times, determinism) are also checked against a deterministic stand-in
for the service, since the real one draws random decision ids."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient

from feature_repo.contracts import RAW_COLUMNS, validate_events
from feature_repo.pseudonyms import lake_pseudonymizer, pseudonymize
from feature_repo.stream import write_tiles
from feature_repo.transforms import event_tiles
from infra import keys
from serving.core.schemas import MAX_EVENTS_PER_CALL as SERVICE_MAX_EVENTS
from serving.main import MAX_BODY_BYTES as SERVICE_MAX_BODY, create_app
from serving.store.decision_log import DECISION_FORMAT, OUTCOME_FORMAT, StreamDrain, read_partitions
from simulator import ShopConfig, build_shop, simulate_events
from simulator.actions import ACTION_INDEX
from simulator.closed_loop import (
    MAX_BODY_BYTES, MAX_EVENTS_PER_CALL, ClockOrderError, ClosedLoopDriver, ServiceClient, ServiceClockError,
    ServiceError, plan_day, respond, session_events,
)
from simulator.closed_loop.client import event_bodies
from simulator.closed_loop.sessions import day_start, from_ms, to_ms
from simulator.config import shop_config
from simulator.response import conversion_probability, delay_parameters
from tests.serving.conftest import SHOP, served_world, serving_settings, shop_clock  # noqa: F401

STEP = timedelta(minutes=15)
FAKE_SHOP = ShopConfig(n_users=2_000, n_items=60, n_days=3, seed=9)
FAKE_ACTIONS = ("no_action", "pct20_sitewide", "push_reminder", "loyalty_points")


class DeterministicService:
    """Answers like the decision service, but deterministically (hashed ids and actions); records every call."""

    def __init__(self, now: datetime | None):
        self.now = now
        self.calls: list[tuple[str, datetime | None, object]] = []
        self.seen: set[str] = set()

    def service_clock(self) -> datetime | None:
        self.calls.append(("clock?", self.now, None))
        return self.now

    def advance_clock(self, instant: datetime) -> datetime:
        assert self.now is not None and instant > self.now, (self.now, instant)  # forward only, and only when moving
        self.now = instant
        self.calls.append(("clock", instant, None))
        return instant

    def decide(self, user_id, surface, context=None, candidates=None) -> dict:
        digest = hashlib.sha256(f"{user_id}|{self.now.isoformat()}|{len(self.calls)}".encode()).hexdigest()
        action = FAKE_ACTIONS[int(digest[:8], 16) % len(FAKE_ACTIONS)]
        self.calls.append(("decide", self.now, user_id))
        return {"decision_id": digest[:32], "surface": surface, "fallback": None, "model": {"name": "m", "version": "1"},
                "actions": [{"action_id": action, "score": 0.0, "propensity": 0.25}]}

    def post_outcome(self, decision_id, revenue, ts) -> dict:
        self.calls.append(("outcome", self.now, (decision_id, revenue, ts)))
        return {"outcome_id": decision_id, "attributed_by": "decision_id"}

    def post_events(self, events) -> dict:
        self.calls.append(("events", self.now, list(events)))
        rejected = [{"index": i, "event_id": e["event_id"], "rule": "event_id.unique", "reason": "duplicate"}
                    for i, e in enumerate(events) if e["event_id"] in self.seen]
        self.seen.update(e["event_id"] for e in events)
        return {"accepted": len(events) - len(rejected), "rejected": rejected, "users_updated": 0, "rows_written": 0}


@pytest.fixture(scope="module")
def fake_shop():
    return build_shop(FAKE_SHOP)


def run_fake(shop, days: int = 2, seed: int = 4, **kwargs):
    """Run `days` closed-loop days after the shop's end against a fresh DeterministicService."""
    service = DeterministicService(shop.config.end)
    driver = ClosedLoopDriver(shop, service, seed=seed, clock_step=STEP, **kwargs)
    logs = [driver.run_day(shop.config.end.date() + timedelta(days=d)) for d in range(days)]
    return service, driver, logs


# --- the simulator's side, no HTTP -------------------------------------------------------------------------------


def test_a_day_plan_is_seeded_per_day_and_sorted_in_time(fake_shop):
    day = fake_shop.config.end.date()
    plan, again = plan_day(fake_shop, day, seed=4), plan_day(fake_shop, day, seed=4)
    for name in ("user_id", "ts_ms", "view_start", "view_ts_ms", "view_item"):
        np.testing.assert_array_equal(getattr(plan, name), getattr(again, name))
    assert not np.array_equal(plan.user_id, plan_day(fake_shop, day + timedelta(days=1), seed=4).user_id)
    assert not np.array_equal(plan.user_id, plan_day(fake_shop, day, seed=5).user_id)
    start = to_ms(day_start(day))
    assert np.all(np.diff(plan.ts_ms) >= 0) and start <= plan.ts_ms.min() and plan.ts_ms.max() < start + 86_400_000
    # Poisson(sessions_per_user_day · activity_u) per user: the day's total within 5 sd of its mean.
    mean = FAKE_SHOP.sessions_per_user_day * fake_shop.activity.sum()
    assert abs(len(plan) - mean) < 5 * np.sqrt(mean)
    views = np.diff(plan.view_start)
    assert views.min() >= 1 and views.max() <= 6 and plan.view_start[-1] == len(plan.view_ts_ms)
    with pytest.raises(ValueError, match="before the shop's start"):
        plan_day(fake_shop, FAKE_SHOP.start.date() - timedelta(days=1), seed=4)


def test_a_response_is_the_ground_truth_of_the_served_action_on_one_stream_per_session(fake_shop):
    plan = plan_day(fake_shop, fake_shop.config.end.date(), seed=4)
    users, ts = plan.user_id, plan.ts_ms
    base = [respond(fake_shop, 4, plan.index, k, int(users[k]), int(ts[k]), "no_action") for k in range(len(plan))]
    deep = [respond(fake_shop, 4, plan.index, k, int(users[k]), int(ts[k]), "pct20_sitewide") for k in range(len(plan))]
    again = [respond(fake_shop, 4, plan.index, k, int(users[k]), int(ts[k]), "no_action") for k in range(len(plan))]
    pd.testing.assert_frame_equal(pd.DataFrame(map(asdict, base)), pd.DataFrame(map(asdict, again)))
    p = conversion_probability(fake_shop, users)
    p0, p1 = p[:, ACTION_INDEX["no_action"]], p[:, ACTION_INDEX["pct20_sitewide"]]
    c0, c1 = np.array([r.converted for r in base]), np.array([r.converted for r in deep])
    # One uniform U per session decides conversion under every action (U < p(u, a)), so a higher p only adds buyers.
    assert np.all(c1[(p1 >= p0) & c0]) and not np.any(c1[(p1 < p0) & ~c0])
    assert c0.sum() > 10 and (c1 != c0).any()
    for k, (r0, r1) in enumerate(zip(base, deep)):
        if r0.converted and r1.converted:  # same item, same delay (exponential: one mean for every action)
            assert (r0.item_id, r0.delay_hours, r0.purchase_ts_ms) == (r1.item_id, r1.delay_hours, r1.purchase_ts_ms)
            assert r0.revenue == round(fake_shop.item_price[r0.item_id], 2)
            assert r1.revenue == round(fake_shop.item_price[r1.item_id] * 0.8, 2)  # the served 20 % discount
        if r1.converted:
            assert r1.purchase_ts_ms == ts[k] + max(1, round(r1.delay_hours * 3_600_000))
    # The conversion rate of the served action is the ground truth's p(u, a) (4 standard errors).
    se = np.sqrt(np.sum(p1 * (1 - p1))) / len(p1)
    assert abs(c1.mean() - p1.mean()) < 4 * se
    with pytest.raises(ValueError, match="does not know"):
        respond(fake_shop, 4, plan.index, 0, int(users[0]), int(ts[0]), "teleport")


def test_the_late_weibull_shop_delays_each_served_action_by_its_own_weibull(fake_shop):
    late = build_shop(shop_config("late_weibull", n_users=FAKE_SHOP.n_users, n_items=FAKE_SHOP.n_items,
                                  n_days=FAKE_SHOP.n_days, seed=FAKE_SHOP.seed))
    plan = plan_day(fake_shop, fake_shop.config.end.date(), seed=4)
    shape, scale = delay_parameters(late.config)
    for action in ("push_reminder", "loyalty_points"):
        a = ACTION_INDEX[action]
        for k in range(len(plan)):
            args = (4, plan.index, k, int(plan.user_id[k]), int(plan.ts_ms[k]), action)
            expo, weib = respond(fake_shop, *args), respond(late, *args)
            assert (expo.converted, expo.item_id, expo.revenue) == (weib.converted, weib.item_id, weib.revenue)
            if expo.converted:  # the same standard exponential E: 10 h · E vs η_a · E^(1/k_a)
                assert weib.delay_hours == pytest.approx(scale[a] * (expo.delay_hours / 10.0) ** (1 / shape[a]))


def test_session_events_follow_the_contracts_and_carry_the_served_action(fake_shop):
    plan = plan_day(fake_shop, fake_shop.config.end.date(), seed=4)
    buyer = next(k for k in range(len(plan))
                 if respond(fake_shop, 4, plan.index, k, int(plan.user_id[k]), int(plan.ts_ms[k]), "pct20_sitewide").converted)
    response = respond(fake_shop, 4, plan.index, buyer, int(plan.user_id[buyer]), int(plan.ts_ms[buyer]), "pct20_sitewide")
    events = session_events(fake_shop, plan, buyer, response, 0.25, "home", seed=4)
    kinds = Counter(e["event_type"] for _, e in events)
    assert kinds["promo_exposure"] == 1 and kinds["purchase"] == 1
    assert kinds["page_view"] == plan.view_start[buyer + 1] - plan.view_start[buyer]
    exposure = next(e for _, e in events if e["event_type"] == "promo_exposure")
    assert (exposure["action_id"], exposure["propensity"], exposure["surface"]) == ("pct20_sitewide", 0.25, "home")
    purchase = next(e for _, e in events if e["event_type"] == "purchase")
    assert purchase["revenue"] == response.revenue and purchase["action_id"] == "pct20_sitewide"
    assert [ts for ts, e in events if e["event_type"] == "purchase"] == [response.purchase_ts_ms]
    frame = pd.DataFrame([e for _, e in events]).reindex(columns=list(RAW_COLUMNS))
    checked = validate_events(frame, pd.Timestamp(from_ms(max(ts for ts, _ in events))))
    assert len(checked.quarantined) == 0 and len(checked.accepted) == len(events)


def test_event_calls_stay_within_the_services_limits():
    assert (MAX_EVENTS_PER_CALL, MAX_BODY_BYTES) == (SERVICE_MAX_EVENTS, SERVICE_MAX_BODY)
    small = [{"event_id": f"e{i}"} for i in range(1_201)]
    calls = list(event_bodies(small))
    assert [offset for offset, _ in calls] == [0, 500, 1_000]
    assert sum(len(json.loads(body)["events"]) for _, body in calls) == 1_201
    large = [{"event_id": f"e{i}", "pad": "x" * 400} for i in range(500)]
    calls = list(event_bodies(large))
    assert len(calls) > 1 and all(len(body) <= MAX_BODY_BYTES for _, body in calls)
    assert [e["event_id"] for _, b in calls for e in json.loads(b)["events"]] == [e["event_id"] for e in large]
    with pytest.raises(ValueError, match="body limit"):
        list(event_bodies([{"event_id": "huge", "pad": "x" * MAX_BODY_BYTES}]))


# --- the driver against a deterministic stand-in ------------------------------------------------------------------


def test_same_seed_and_same_answers_give_the_same_days(fake_shop):
    _, _, first = run_fake(fake_shop)
    _, _, second = run_fake(fake_shop)
    for a, b in zip(first, second):
        pd.testing.assert_frame_equal(a.decisions, b.decisions)
        assert a.summary() == b.summary() and a.delivered == b.delivered
    _, _, other = run_fake(fake_shop, days=1, seed=5)  # another seed: other visitors
    assert not other[0].decisions["session_id"].isin(first[0].decisions["session_id"]).any()
    assert not np.array_equal(other[0].decisions["user_id"].to_numpy()[:50], first[0].decisions["user_id"].to_numpy()[:50])


def test_the_clock_moves_forward_on_the_step_grid_and_nothing_is_delivered_before_its_time(fake_shop):
    service, driver, logs = run_fake(fake_shop)
    clock = [t for kind, t, _ in service.calls if kind == "clock"]
    assert clock == sorted(set(clock)) and all(to_ms(t) % (STEP // timedelta(milliseconds=1)) == 0 for t in clock)
    for log in logs:
        d = log.decisions
        floor = d["ts"].dt.floor("15min")
        assert (d["decided_at"] == floor).all() and (d["decided_at"].dt.date == log.day).all()
        assert d["action"].isin(FAKE_ACTIONS).all() and (d["propensity"] == 0.25).all()
        assert log.clock == day_start(log.day) + timedelta(days=1)
    decided = [(t, user) for kind, t, user in service.calls if kind == "decide"]
    all_rows = pd.concat([log.decisions for log in logs], ignore_index=True)
    assert decided == list(zip(all_rows["decided_at"].dt.to_pydatetime(), all_rows["user_id"]))
    # Events: each posted once, at the first step at or after its own time.
    posted = [(t, e) for kind, t, events in service.calls if kind == "events" for e in events]
    ids = [e["event_id"] for _, e in posted]
    assert len(ids) == len(set(ids))
    for t, e in posted:
        ts = datetime.fromisoformat(e["ts"])
        assert ts <= t < ts + STEP, (e, t)
    # Outcomes: each converted session's purchase once, at its own time, when the clock has reached it.
    outcomes = [(t, body) for kind, t, body in service.calls if kind == "outcome"]
    assert all(ts <= t < ts + STEP for t, (_, _, ts) in outcomes)
    bought = all_rows.loc[all_rows["converted"] & (all_rows["purchase_ts"] <= logs[-1].clock)]
    assert sorted((d, r, ts) for _, (d, r, ts) in outcomes) == sorted(
        zip(bought["decision_id"], bought["revenue"], bought["purchase_ts"].dt.to_pydatetime()))
    assert driver.pending_purchases == logs[-1].purchases_pending == int(
        (all_rows["converted"] & (all_rows["purchase_ts"] > logs[-1].clock)).sum())
    total = sum(log.delivered.events_posted for log in logs)
    assert total == len(posted) and sum(log.delivered.events_accepted for log in logs) == total


def test_an_earlier_day_is_refused_before_anything_is_sent(fake_shop):
    service, driver, logs = run_fake(fake_shop, days=1)
    calls = len(service.calls)
    with pytest.raises(ClockOrderError, match=r"only moves forward: run days in order \(the next day that can run is"):
        driver.run_day(logs[0].day)
    with pytest.raises(ClockOrderError, match="only moves forward"):
        driver.deliver_until(day_start(logs[0].day))
    assert len(service.calls) == calls
    late = ClosedLoopDriver(fake_shop, DeterministicService(FAKE_SHOP.end + timedelta(hours=6)), seed=4)
    with pytest.raises(ClockOrderError, match="restart the service with HYPERLIFT_SERVING_NOW"):
        late.run_day(FAKE_SHOP.end.date())


def test_a_wall_clock_service_is_refused_with_what_to_do(fake_shop):
    driver = ClosedLoopDriver(fake_shop, DeterministicService(None))
    with pytest.raises(ServiceClockError, match="start it with HYPERLIFT_SERVING_NOW"):
        driver.run_day(FAKE_SHOP.end.date())
    with pytest.raises(ValueError, match="divides a day"):
        ClosedLoopDriver(fake_shop, DeterministicService(None), clock_step=timedelta(minutes=7))


def test_without_events_only_outcomes_are_posted(fake_shop):
    service, _, logs = run_fake(fake_shop, days=1, events=False)
    assert not any(kind == "events" for kind, _, _ in service.calls)
    assert logs[0].delivered.events_posted == 0 and logs[0].delivered.outcomes_posted > 0


# --- the real service -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch_tiles(served_world) -> None:
    """The batch's tiles of the served shop in Redis (the online_tiles asset), so streamed events add to them: keyed
    by the users' pseudonyms under the served home's key, as the pipeline and the service key them."""
    settings, redis_url, _ = served_world
    accepted = validate_events(simulate_events(build_shop(SHOP)), pd.Timestamp(SHOP.end)).accepted
    door = lake_pseudonymizer(path=keys.key_file(settings))
    write_tiles(redis.Redis.from_url(redis_url), event_tiles(pseudonymize(accepted, door)))


def test_the_client_says_what_to_do_about_a_wall_clock_service_and_a_missing_admin_token(serving_settings, batch_tiles):
    wall = serving_settings.model_copy(update={"now": None, "admin_token": "s3cret"})
    with TestClient(create_app(wall)) as api:
        anonymous, admin = ServiceClient(api), ServiceClient(api, admin_token="s3cret")
        assert admin.service_clock() is None
        with pytest.raises(ServiceError, match=r"answered 401.*pass it as ServiceClient\(\.\.\., admin_token=\.\.\.\)"):
            anonymous.advance_clock(SHOP.end)
        with pytest.raises(ServiceClockError, match="start it with HYPERLIFT_SERVING_NOW"):
            admin.advance_clock(SHOP.end + timedelta(days=1))
        with pytest.raises(ServiceClockError, match="start it with HYPERLIFT_SERVING_NOW"):
            ClosedLoopDriver(build_shop(SHOP), admin).run_day(SHOP.end.date())
        with pytest.raises(ServiceError, match=r"POST /v1/decisions for user 1 on 'nowhere'.*answered 404"):
            admin.decide(1, "nowhere")


def _drain(url: str, stream: str, fmt, root) -> pd.DataFrame:
    StreamDrain(redis.Redis.from_url(url), stream, "closed-loop", "c1", root, fmt).drain()
    return read_partitions(root, record_format=fmt)


def test_two_days_against_the_real_service(serving_settings, served_world, batch_tiles, tmp_path):
    shop = build_shop(SHOP)
    first = SHOP.end.date()
    days = [first, first + timedelta(days=1)]
    closed = day_start(days[-1]) + timedelta(days=4)  # every purchase's window has closed by then
    with TestClient(create_app(serving_settings)) as api:
        client = ServiceClient(api)
        driver = ClosedLoopDriver(shop, client, surface="home", seed=3, clock_step=STEP)
        logs = [driver.run_day(day) for day in days]
        tail = driver.deliver_until(closed)
        with pytest.raises(ClockOrderError, match="only moves forward"):
            driver.run_day(first)
        assert client.service_clock() == closed  # the refused day did not move the service's clock
        metrics = api.get("/metrics").text
        api.app.state.runtime.service.trace.flush()
    rows = pd.concat([log.decisions for log in logs], ignore_index=True)
    assert len(rows) > 50 and rows["decision_id"].is_unique and rows["fallback"].isna().all()
    assert rows["action"].nunique() >= 2  # ε-greedy explores: the responses are drawn for different actions

    # Every session's decision is in the service's trace with the served action and propensity, stamped by its clock.
    trace = _drain(serving_settings.redis_url, serving_settings.decision_stream, DECISION_FORMAT, tmp_path / "d")
    trace = trace.set_index("decision_id").loc[rows["decision_id"]]
    assert [list(c)[0] for c in trace["chosen"]] == list(rows["action"])
    assert [list(p)[0] for p in trace["chosen_probabilities"]] == list(rows["propensity"])
    expected_ts = rows["ts"].dt.floor("15min")
    assert list(trace["ts"]) == [t.timestamp() for t in expected_ts] == [t.timestamp() for t in rows["decided_at"]]
    assert (rows["decided_at"].dt.date == rows["ts"].dt.date).all()

    # Each response is the simulator's draw for the action the service served.
    for log in logs:
        plan = plan_day(shop, log.day, seed=3)
        for k, row in enumerate(log.decisions.itertuples()):
            r = respond(shop, 3, plan.index, k, row.user_id, int(plan.ts_ms[k]), row.action)
            assert (r.converted, r.revenue) == (row.converted, row.revenue)

    # Every purchase reached the outcome stream once, with its decision_id, revenue and own time.
    outcomes = _drain(serving_settings.redis_url, serving_settings.outcome_stream, OUTCOME_FORMAT, tmp_path / "o")
    ours = outcomes.loc[outcomes["decision_id"].isin(rows["decision_id"])]
    bought = rows.loc[rows["converted"]]
    assert bought["purchase_ts"].max() <= closed and driver.pending_purchases == 0
    assert ours["decision_id"].is_unique and len(ours) == len(bought) > 0
    got = ours.set_index("decision_id").loc[bought["decision_id"]]
    assert list(got["revenue"]) == list(bought["revenue"])
    assert list(got["ts"]) == [t.timestamp() for t in bought["purchase_ts"]]
    assert sum(log.delivered.outcomes_posted for log in logs) + tail.outcomes_posted == len(bought)

    # Every event was posted once and accounted for as the service answered; all were valid, none replayed.
    delivered = [log.delivered for log in logs] + [tail]
    for d in delivered:
        assert d.events_posted == d.events_accepted + d.events_quarantined + d.events_duplicate
    n_events = 0
    for log in logs:
        plan = plan_day(shop, log.day, seed=3)
        for k, row in enumerate(log.decisions.itertuples()):
            r = respond(shop, 3, plan.index, k, row.user_id, int(plan.ts_ms[k]), row.action)
            n_events += len(session_events(shop, plan, k, r, row.propensity, "home", seed=3))
    assert sum(d.events_posted for d in delivered) == sum(d.events_accepted for d in delivered) == n_events
    assert f"hyperlift_events_accepted_total {float(n_events)}" in metrics

    # The streamed events moved the features a later decision read: its activity row is newer than the batch's.
    second_day = trace.loc[logs[1].decisions["decision_id"]]
    stamps = [json.loads(f)["user_activity_fv"]["event_ts"] for f in second_day["features"]]
    assert any(datetime.fromisoformat(s) > SHOP.end for s in stamps)
