import random
import socket
import threading
from collections.abc import Iterator
from datetime import date

import pytest
import redis

from serving.policy.budgets import COUNTER_TTL_S, Budget, CampaignBudgets

MAY_1 = 1_714_521_600.0  # 2024-05-01 00:00 UTC
HOUR = 3600.0


@pytest.fixture
def client(redis_databases) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_databases.fresh())
    yield client
    client.close()


def test_even_pacing_allows_the_elapsed_share_of_the_day_plus_the_burst(client):
    budgets = CampaignBudgets(client, [])
    even = Budget("summer", {"pct10": 1.0}, daily_budget=1000.0)
    assert budgets.allowance(even, MAY_1) == 50.0
    assert budgets.allowance(even, MAY_1 + 6 * HOUR) == 300.0
    assert budgets.allowance(even, MAY_1 + 12 * HOUR) == 550.0
    assert budgets.allowance(even, MAY_1 + 23 * HOUR + 59 * 60) == 1000.0  # capped at the daily budget
    assert budgets.allowance(even, MAY_1 + 24 * HOUR) == 50.0  # a new day
    no_burst = Budget("strict", {"pct10": 1.0}, daily_budget=1000.0, burst=0.0)
    assert budgets.allowance(no_burst, MAY_1) == 0.0
    assert budgets.allowance(no_burst, MAY_1 + 18 * HOUR) == 750.0
    unpaced = Budget("flash", {"pct10": 1.0}, daily_budget=1000.0, pacing="none")
    assert budgets.allowance(unpaced, MAY_1) == 1000.0


def test_spend_stops_at_the_paced_allowance_and_resumes_as_the_day_goes_on(client):
    budgets = CampaignBudgets(client, [Budget("summer", {"pct10": 2.5}, daily_budget=100.0)])
    six = MAY_1 + 6 * HOUR  # allowance 25 + 5
    assert [budgets.spend("pct10", now=six) for _ in range(13)] == [True] * 12 + [False]
    assert budgets.spent("summer", date(2024, 5, 1)) == 30.0
    assert budgets.exhausted(["pct10", "no_action"], now=six) == {"pct10"}
    noon = MAY_1 + 12 * HOUR  # allowance 50 + 5
    assert budgets.exhausted(["pct10"], now=noon) == set()
    assert [budgets.spend("pct10", now=noon) for _ in range(11)] == [True] * 10 + [False]
    assert budgets.spent("summer", date(2024, 5, 1)) == 55.0


def test_totals_are_exact_in_micro_units(client):
    budgets = CampaignBudgets(client, [Budget("cents", {"push": 0.1}, daily_budget=1.0, pacing="none")])
    assert [budgets.spend("push", now=MAY_1) for _ in range(11)] == [True] * 10 + [False]
    assert sum([0.1] * 10) != 1.0  # what float accumulation (INCRBYFLOAT) would drift to
    assert budgets.spent("cents", date(2024, 5, 1)) == 1.0
    assert client.get(budgets.key("cents", date(2024, 5, 1))) == b"1000000"


def test_an_action_in_two_campaigns_is_charged_to_both_or_to_neither(client):
    summer = Budget("summer", {"pct10": 4.0}, daily_budget=10.0, pacing="none")
    sitewide = Budget("sitewide", {"pct10": 1.0, "push": 0.5}, daily_budget=3.0, pacing="none")
    budgets = CampaignBudgets(client, [summer, sitewide])
    day = date(2024, 5, 1)
    assert budgets.spend("pct10", now=MAY_1) and budgets.spend("pct10", now=MAY_1)
    assert not budgets.spend("pct10", now=MAY_1)  # summer cannot pay 4 more; sitewide could have paid 1
    assert (budgets.spent("summer", day), budgets.spent("sitewide", day)) == (8.0, 2.0)
    assert budgets.exhausted(["pct10", "push", "no_action"], now=MAY_1) == {"pct10"}
    assert budgets.spend("push", now=MAY_1) and budgets.spend("push", now=MAY_1)
    assert not budgets.spend("push", now=MAY_1)
    assert (budgets.spent("summer", day), budgets.spent("sitewide", day)) == (8.0, 3.0)

    budgets = CampaignBudgets(client, [summer, sitewide], prefix="other")
    assert all(budgets.spend("push", now=MAY_1) for _ in range(4))
    assert budgets.spend("pct10", now=MAY_1)  # sitewide at exactly 3.0 of 3.0
    assert not budgets.spend("pct10", now=MAY_1)  # now sitewide is the one that cannot pay; summer could
    assert (budgets.spent("summer", day), budgets.spent("sitewide", day)) == (4.0, 3.0)


def test_a_new_utc_day_starts_a_new_counter(client):
    budgets = CampaignBudgets(client, [Budget("flash", {"pct10": 1.0}, daily_budget=5.0, pacing="none")])
    late = MAY_1 + 23 * HOUR + 59 * 60 + 59.5
    assert [budgets.spend("pct10", now=late) for _ in range(6)] == [True] * 5 + [False]
    assert budgets.spend("pct10", now=MAY_1 + 24 * HOUR)
    assert budgets.spent("flash", date(2024, 5, 1)) == 5.0
    assert budgets.spent("flash", date(2024, 5, 2)) == 1.0
    assert sorted(client.keys("*")) == [b"hyperlift:budget:{flash:2024-05-01}", b"hyperlift:budget:{flash:2024-05-02}"]
    assert COUNTER_TTL_S - 60 < client.ttl(b"hyperlift:budget:{flash:2024-05-02}") <= COUNTER_TTL_S


def test_actions_in_no_campaign_are_free_and_touch_nothing(client):
    budgets = CampaignBudgets(client, [Budget("summer", {"pct10": 1.0}, daily_budget=1.0)])
    assert all(budgets.spend("no_action", now=MAY_1) for _ in range(5))
    assert budgets.exhausted(["no_action", "push"], now=MAY_1) == set()
    assert client.keys("*") == []


def test_the_clock_is_used_when_no_time_or_day_is_given(client):
    clock = [MAY_1 + 12 * HOUR]
    budgets = CampaignBudgets(client, [Budget("summer", {"pct10": 10.0}, daily_budget=100.0)], clock=lambda: clock[0])
    assert [budgets.spend("pct10") for _ in range(6)] == [True] * 5 + [False]  # allowance 55
    assert budgets.spent("summer") == 50.0 and budgets.exhausted(["pct10"]) == {"pct10"}
    clock[0] = MAY_1 + 24 * HOUR
    assert budgets.spent("summer") == 0.0 and budgets.exhausted(["pct10"]) == {"pct10"}  # allowance 5 < cost 10
    clock[0] += 1.5 * HOUR  # allowance 11.25
    assert budgets.exhausted(["pct10"]) == set() and budgets.spend("pct10")


def test_exhausted_agrees_with_spend_through_a_random_history(client):
    budgets = CampaignBudgets(
        client,
        [
            Budget("summer", {"pct10": 3.25, "pct20": 6.5}, daily_budget=400.0),
            Budget("sitewide", {"pct10": 0.75, "push": 0.125}, daily_budget=60.0, burst=0.0),
            Budget("flash", {"push": 0.5}, daily_budget=40.0, pacing="none"),
        ],
    )
    actions = ["pct10", "pct20", "push", "no_action"]
    rng = random.Random(11)
    now, outcomes = MAY_1, []
    for _ in range(600):
        now += rng.choice([0.0, 0.0, 60.0, 300.0, 900.0])
        exhausted = budgets.exhausted(actions, now=now)
        action = rng.choice(actions)
        spent = budgets.spend(action, now=now)
        assert spent == (action not in exhausted), (now, action, exhausted)
        outcomes.append(spent)
    assert outcomes.count(False) > 50 and outcomes.count(True) > 50  # both branches were exercised


def sixteen_threads_spend_exactly_what_the_budget_affords(client) -> None:
    """37 shows fit: 16 threads × 20 attempts get exactly 37, and both campaigns are charged exactly 37 times (one
    Redis server here, a Redis Cluster in test_budgets_cluster.py)."""
    budgets = CampaignBudgets(
        client,
        [
            Budget("tight", {"pct10": 0.1}, daily_budget=3.7, pacing="none"),
            Budget("loose", {"pct10": 0.3}, daily_budget=1000.0, pacing="none"),
        ],
    )
    start = threading.Barrier(16)
    results: list[bool] = []
    lock = threading.Lock()

    def hammer() -> None:
        start.wait()
        mine = [budgets.spend("pct10", now=MAY_1) for _ in range(20)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 320 and results.count(True) == 37
    assert budgets.spent("tight", date(2024, 5, 1)) == 3.7
    assert budgets.spent("loose", date(2024, 5, 1)) == pytest.approx(11.1, abs=1e-12)


def test_sixteen_threads_spend_exactly_what_the_budget_affords(client):
    sixteen_threads_spend_exactly_what_the_budget_affords(client)


def test_redis_errors_propagate_to_the_caller():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = redis.Redis(port=port, socket_timeout=0.05, socket_connect_timeout=0.05, retry=None)
    budgets = CampaignBudgets(closed, [Budget("summer", {"pct10": 1.0}, daily_budget=100.0)])
    for call in (
        lambda: budgets.exhausted(["pct10"], now=MAY_1),
        lambda: budgets.spend("pct10", now=MAY_1),
        lambda: budgets.spent("summer", date(2024, 5, 1)),
    ):
        with pytest.raises(redis.exceptions.RedisError):
            call()
    assert budgets.spend("no_action", now=MAY_1)  # nothing to charge: no round trip at all


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Budget("b", {"pct10": -1.0}, daily_budget=10.0), "costs must be finite and >= 0; got {'pct10': -1.0}"),
        (lambda: Budget("b", {"pct10": float("nan")}, daily_budget=10.0), "costs must be finite"),
        (lambda: Budget("b", {"pct10": 1.0}, daily_budget=0.0), "daily_budget must be a positive number; got 0.0"),
        (lambda: Budget("b", {"pct10": 1.0}, daily_budget=-5.0), "daily_budget must be a positive number"),
        (lambda: Budget("b", {"pct10": 1.0}, daily_budget=1e10), "too large for exact micro-units"),
        (lambda: Budget("b", {"pct10": 1.0}, daily_budget=10.0, pacing="front"), "pacing must be one of"),
        (lambda: Budget("b", {"pct10": 1.0}, daily_budget=10.0, burst=1.5), "burst must be a share"),
        (lambda: Budget("", {"pct10": 1.0}, daily_budget=10.0), "campaign name must be non-empty"),
        (
            lambda: CampaignBudgets(None, [Budget("b", {}, 1.0), Budget("b", {}, 2.0), Budget("c", {}, 1.0)]),
            "duplicate campaign names: \\['b'\\]",
        ),
        (lambda: CampaignBudgets(None, [], prefix="budget:{x}"), "key prefix must be non-empty and free of braces"),
    ],
)
def test_configuration_errors_say_what_is_wrong(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_spent_of_an_unknown_campaign_is_an_error(client):
    budgets = CampaignBudgets(client, [Budget("summer", {"pct10": 1.0}, daily_budget=1.0)])
    with pytest.raises(KeyError, match="no budget for campaign 'winter'; known: \\['summer'\\]"):
        budgets.spent("winter", date(2024, 5, 1))


def test_pipelined_spend_and_refund_keep_exact_totals(redis_databases):
    client = redis.Redis.from_url(redis_databases.fresh())
    budgets = CampaignBudgets(client, [Budget("c", {"a": 0.3}, 1.0, "none")], clock=lambda: MAY_1 + 12 * HOUR)
    pipe = client.pipeline(transaction=False)
    spends = [budgets.queue_spend(pipe, "a") for _ in range(4)]
    replies = pipe.execute(raise_on_error=False)
    assert [bool(spend(replies)) for spend in spends] == [True, True, True, False]
    assert budgets.spent("c") == pytest.approx(0.9, abs=1e-12)
    budgets.refund("a")
    assert budgets.spent("c") == pytest.approx(0.6, abs=1e-12)
    pipe = client.pipeline(transaction=False)
    exhausted = budgets.queue_exhausted(pipe, ["a", "b"])
    assert exhausted(pipe.execute()) == set() == budgets.exhausted(["a", "b"])
    client.script_flush()
    pipe = client.pipeline(transaction=False)
    spend = budgets.queue_spend(pipe, "a")
    assert spend(pipe.execute(raise_on_error=False)).paid is True and budgets.spent("c") == pytest.approx(0.9, abs=1e-12)


def test_utc_day_and_midnight_agree_with_datetime():
    from datetime import UTC, datetime

    from serving.policy.budgets import _midnight, _utc_day

    rng = random.Random(0)
    stamps = [MAY_1, MAY_1 - 1e-3, MAY_1 + 86_400.0 - 1e-3, 0.0, 951_782_400.0]  # midnights and either side; 2000-02-29
    stamps += [rng.uniform(0, 4e9) for _ in range(2_000)]
    for now in stamps:
        expected = datetime.fromtimestamp(now, tz=UTC)
        assert _utc_day(now) == expected.date(), now
        midnight = datetime(expected.year, expected.month, expected.day, tzinfo=UTC).timestamp()
        assert _midnight(now) == midnight, now


def test_counters_of_the_day_tagged_layout_are_adopted_once(client):
    """A deployment upgraded mid-day keeps the day's spend: the `{day}`-tagged counters of today and yesterday are
    added to the `{campaign:day}` keys once, and the old keys are gone."""
    budgets = CampaignBudgets(client, [Budget("flash", {"pct10": 1.0}, 5.0, "none"), Budget("summer", {"x": 1.0}, 9.0)])
    client.set("hyperlift:budget:{2024-05-01}:flash", 3_000_000)
    client.set("hyperlift:budget:{2024-04-30}:summer", 7_000_000)
    client.set("hyperlift:budget:{2024-04-29}:flash", 1)  # older than yesterday: left to expire
    assert budgets.spend("pct10", now=MAY_1)  # 1.0 spent under the new key before the adoption
    assert budgets.adopt_day_tagged_counters(now=MAY_1 + HOUR) == 2
    assert budgets.spent("flash", date(2024, 5, 1)) == 4.0 and budgets.spent("summer", date(2024, 4, 30)) == 7.0
    assert budgets.adopt_day_tagged_counters(now=MAY_1 + HOUR) == 0  # taken once
    assert sorted(client.keys("*")) == [
        b"hyperlift:budget:{2024-04-29}:flash", b"hyperlift:budget:{flash:2024-05-01}", b"hyperlift:budget:{summer:2024-04-30}"
    ]
    assert COUNTER_TTL_S - 60 < client.ttl(b"hyperlift:budget:{summer:2024-04-30}") <= COUNTER_TTL_S
    assert [budgets.spend("pct10", now=MAY_1 + HOUR) for _ in range(2)] == [True, False]  # 4 + 1 = 5 of 5
