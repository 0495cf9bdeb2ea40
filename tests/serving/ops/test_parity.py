"""Fair exposure's caps as serving applies them: polled from Redis, a product over the user's groups, drawn before
the policy, answered neutral with probability 1 − keep and logged as the `parity_cap` fallback."""

import redis

from serving.core.runtime import build_runtime
from serving.core.schemas import DecisionRequest
from serving.ops.parity import PARITY_CAP, ParityCaps, parse_caps


def caps_at(url: str) -> ParityCaps:
    return ParityCaps(redis.Redis.from_url(url, socket_timeout=0.2, socket_connect_timeout=0.2, retry=None), poll_s=0)


def test_caps_reach_a_worker_at_its_poll_and_multiply_over_the_users_groups(redis_databases):
    url = redis_databases.fresh()
    writer, worker = caps_at(url), caps_at(url)
    writer.replace({"home|device|mobile": 0.5, "home|region|north": 0.8, "cart|segment|buyer": 0.25})
    assert worker.keep_for("home", {"is_mobile": 1.0, "region_code": 0.0}) == 1.0  # not polled yet
    worker.refresh()
    assert worker.count == 3
    assert worker.keep_for("home", {"is_mobile": 1.0, "region_code": 0.0}) == 0.5 * 0.8  # mobile and north
    assert worker.keep_for("home", {"is_mobile": 0.0, "region_code": 1.0}) == 1.0  # desktop, south
    assert worker.keep_for("cart", {"purchases_total": 3.0}) == 0.25
    assert worker.keep_for("checkout", {"is_mobile": 1.0}) == 1.0
    writer.replace({})  # caps lifted
    worker.refresh()
    assert worker.count == 0 and worker.keep_for("home", {"is_mobile": 1.0}) == 1.0


def test_malformed_caps_are_ignored_never_applied():
    caps = parse_caps({b"home|device|mobile": b"0.5", b"home|planet|mars": b"0.5", b"home|device": b"0.5",
                       b"home|device|desktop": b"0", b"cart|region|south": b"1.5", b"cart|region|west": b"x"})
    assert caps == {"home": {("device", "mobile"): 0.5}}


def test_a_failed_poll_keeps_the_last_caps_and_is_counted(redis_databases):
    url = redis_databases.fresh()
    worker = caps_at(url)
    caps_at(url).replace({"home|device|mobile": 0.5})
    worker.refresh()
    worker.client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=None)
    worker.refresh()
    assert worker.poll_failures == 1 and worker.count == 1


def test_the_service_answers_the_capped_group_neutral_with_probability_one_minus_keep(serving_settings, served_world):
    users = served_world[2]
    eligible = users.loc[users["consent_marketing"] & users["region"].isin(["south", "west"])]
    mobile = [int(u) for u in eligible.loc[eligible["device"] == "mobile", "user_id"]]
    desktop = [int(u) for u in eligible.loc[eligible["device"] == "desktop", "user_id"]]
    service = build_runtime(serving_settings).service
    caps_at(serving_settings.redis_url).replace({"home|device|mobile": 0.4})
    service.parity.refresh()  # the worker's poll
    on_mobile = [service.decide(DecisionRequest(user_id=u, surface="home")) for u in (mobile * 40)[:400]]
    on_desktop = [service.decide(DecisionRequest(user_id=u, surface="home")) for u in (desktop * 40)[:200]]
    on_cart = [service.decide(DecisionRequest(user_id=u, surface="cart")) for u in (mobile * 40)[:100]]
    capped = [r for r in on_mobile if r.fallback == PARITY_CAP]
    assert 0.6 * 400 - 3 * 9.8 < len(capped) < 0.6 * 400 + 3 * 9.8  # binomial(400, 0.6): sd 9.8
    assert all(r.actions[0].action_id == "no_action" and r.actions[0].propensity == 1.0 for r in capped)
    assert not [r for r in on_desktop + on_cart if r.fallback == PARITY_CAP]  # other groups and surfaces untouched
    m = service.metrics
    assert m.total("hyperlift_parity_capped_decisions_total", surface="home") == len(capped)
    assert m.total("hyperlift_fallbacks_total", reason=PARITY_CAP) == len(capped)
    assert m.total("hyperlift_parity_caps") == 1
    service.trace.close(timeout_s=0.5)
