"""Campaign budgets and frequency caps on a real Redis Cluster: a day's counters spread over the masters, an action
of several campaigns charged to all or none across slots, and the exact totals under concurrency."""

from __future__ import annotations

from datetime import date

import pytest

from infra.redis_cluster import redis_client, slot
from serving.policy.budgets import Budget, CampaignBudgets
from serving.policy.caps import CapRule, FrequencyCaps
from serving.store.round_trip import RoundTrip
from tests.infra.redis_cluster import cluster_url, redis_cluster  # noqa: F401
from tests.serving.policy.test_budgets import HOUR, MAY_1, sixteen_threads_spend_exactly_what_the_budget_affords

pytestmark = pytest.mark.redis_cluster

CAMPAIGNS = [f"campaign_{i}" for i in range(12)]


class _NoClient:
    """Enough of a client to compute keys without a server."""

    def register_script(self, script: str) -> object:
        return None


def test_a_days_budget_counters_spread_over_slots_and_masters(redis_cluster):  # noqa: F811
    budgets = CampaignBudgets(_NoClient(), [Budget(c, {"a": 1.0}, 10.0) for c in CAMPAIGNS])
    day = date(2026, 12, 6)
    keys = [budgets.key(campaign, day) for campaign in CAMPAIGNS]
    assert keys[0] == "hyperlift:budget:{campaign_0:2026-12-06}"
    assert len({slot(key) for key in keys}) == 12  # one slot per campaign
    assert {redis_cluster.master_of(key).port for key in keys} == set(redis_cluster.master_ports())
    # the layout before: one tag per day put every campaign of the day on one slot
    assert len({slot(f"hyperlift:budget:{{{day.isoformat()}}}:{campaign}") for campaign in CAMPAIGNS}) == 1
    # and the next day moves every campaign to another slot (a day's hot campaign does not stay on one shard)
    assert all(slot(budgets.key(c, date(2026, 12, 7))) != slot(budgets.key(c, day)) for c in CAMPAIGNS)


@pytest.fixture
def cluster_client(cluster_url):  # noqa: F811
    client = redis_client(cluster_url, timeout_s=2.0)
    yield client
    client.close()


def test_an_action_of_two_campaigns_on_two_masters_is_charged_to_both_or_neither(
    cluster_client, redis_cluster  # noqa: F811
):
    summer = Budget("summer", {"pct10": 4.0}, daily_budget=10.0, pacing="none")
    flash = Budget("flash", {"pct10": 1.0, "push": 0.5}, daily_budget=3.0, pacing="none")
    budgets = CampaignBudgets(cluster_client, [summer, flash])
    day = date(2024, 5, 1)
    assert redis_cluster.master_of(budgets.key("summer", day)).port != redis_cluster.master_of(
        budgets.key("flash", day)).port
    assert budgets.spend("pct10", now=MAY_1) and budgets.spend("pct10", now=MAY_1)
    assert not budgets.spend("pct10", now=MAY_1)  # summer cannot pay 4 more: flash's charge is handed back
    assert (budgets.spent("summer", day), budgets.spent("flash", day)) == (8.0, 2.0)
    assert budgets.exhausted(["pct10", "push", "no_action"], now=MAY_1) == {"pct10"}
    assert budgets.spend("push", now=MAY_1) and budgets.spend("push", now=MAY_1)
    assert not budgets.spend("push", now=MAY_1)
    assert (budgets.spent("summer", day), budgets.spent("flash", day)) == (8.0, 3.0)


def test_a_partial_charge_in_a_round_trip_is_reported_and_handed_back_exactly(cluster_client):
    budgets = CampaignBudgets(
        cluster_client,
        [Budget("tight", {"a": 1.0}, 1.0, "none"), Budget("loose", {"a": 0.25}, 100.0, "none")],
        clock=lambda: MAY_1 + 12 * HOUR,
    )
    assert budgets.spend("a")
    pipe = RoundTrip(cluster_client)
    charge = budgets.queue_spend(pipe, "a")(pipe.execute(raise_on_error=False))
    key = budgets.key("loose", date(2024, 5, 1))
    assert not charge and charge.charged == ((key, 250_000),)  # tight refused, loose charged
    assert budgets.spent("loose") == 0.5
    undo = RoundTrip(cluster_client)
    budgets.queue_refund(undo, "a", charge=charge)
    assert undo.command_stack == [("DECRBY", key, 250_000)]
    undo.execute()
    assert (budgets.spent("tight"), budgets.spent("loose")) == (1.0, 0.25)


def test_sixteen_threads_on_a_cluster_spend_exactly_what_the_budget_affords(cluster_client):
    sixteen_threads_spend_exactly_what_the_budget_affords(cluster_client)


def test_caps_on_a_cluster_hold_their_limit_per_user(cluster_client):
    caps = FrequencyCaps(cluster_client, [CapRule("daily", 86_400, 2), CapRule("hourly", 3_600, 1)], "no_action")
    users = [f"u{i}" for i in range(30)]  # their keys spread over every master
    for user in users:
        assert [caps.reserve(user, "push", f"{user}-{i}", now=MAY_1 + i) for i in range(3)] == [True, False, False]
        assert caps.blocked(user, ["push", "no_action"], now=MAY_1 + 10) == {"push"}
        caps.release(user, "push", f"{user}-0")
        assert caps.count(user, "daily", now=MAY_1 + 10) == 0


def test_day_tagged_counters_are_adopted_across_slots(cluster_client):
    budgets = CampaignBudgets(cluster_client, [Budget("flash", {"pct10": 1.0}, 5.0, "none")], clock=lambda: MAY_1)
    cluster_client.set("hyperlift:budget:{2024-05-01}:flash", 2_000_000)
    budgets.load_scripts()  # what the service's warm-up calls
    assert budgets.adopt_day_tagged_counters() == 0  # load_scripts took it already
    assert budgets.spent("flash", date(2024, 5, 1)) == 2.0
    assert cluster_client.get("hyperlift:budget:{2024-05-01}:flash") is None
