"""Campaign budgets with pacing: a show is paid for only if every campaign it belongs to can afford it now.

Each campaign has a daily budget B for the UTC day. Its allowance at time t is what it may have spent so far:
pacing "none" → B; pacing "even" → min(B, B · (share of the UTC day elapsed) + burst · B), so spend follows a
straight line through the day and may run `burst` · B ahead of it. `spend` charges an action's cost to each of its
campaigns if, for every one of them, spent + cost ≤ allowance, and to none of them otherwise.

Counters are integers in micro-units (round(amount · 1e6)), one per campaign per UTC day, expiring two days after
their last charge: sums are exact (no INCRBYFLOAT drift), and a new day starts from zero. Amounts are therefore
resolved to 1e-6 currency units.

Why Lua: read-check-increment done in separate round trips lets concurrent decisions all see room for the last
show and all charge it. A script reads, checks and increments a campaign's counter, and Redis runs it atomically,
so spend never passes the allowance under any concurrency. `exhausted` is a single read-only MGET (one round
trip); it is advisory, `spend` is the authority.

Keys: `hyperlift:budget:{<campaign>:<YYYY-MM-DD>}`, one hash tag per campaign and day, so on a Redis Cluster the
day's spend spreads over as many slots as there are campaigns (a tag per day put every spend of the day on one
shard). A script's keys must share a slot, so an action paid by several campaigns runs one script per slot (one
per campaign) in the same round trip: each is atomic, and when one refuses, the campaigns that did charge are
handed back (`Charge.charged`, `queue_refund(..., charge=)`). Spend still never passes an allowance; a refused
show is uncharged one round trip later (in that window a concurrent show of a shared campaign may be refused
for room that is about to come back: refusals err on the side of the budget). Redis failures propagate as
`redis.exceptions.RedisError`; the caller decides the fallback.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Literal

import redis

from infra.redis_cluster import slot
from serving.policy.scripts import hash_tag_free, script_reply
from serving.store.round_trip import RoundTrip

MICROS = 1_000_000
DAY_S = 86_400
COUNTER_TTL_S = 2 * DAY_S  # yesterday's counters stay readable for a day after the rollover
PACINGS = ("none", "even")

# KEYS: the action's campaign counters. ARGV: ttl_s, then per key: cost_micros, allowance_micros.
# Micro-unit totals stay below 2**53, where Lua's doubles are exact.
_SPEND = """
for i, key in ipairs(KEYS) do
  local spent = tonumber(redis.call('GET', key) or '0')
  if spent + tonumber(ARGV[2 * i]) > tonumber(ARGV[2 * i + 1]) then
    return 0
  end
end
for i, key in ipairs(KEYS) do
  redis.call('INCRBY', key, ARGV[2 * i])
  redis.call('EXPIRE', key, ARGV[1])
end
return 1
"""


@dataclass(frozen=True)
class Budget:
    """A campaign's daily budget, the cost it pays per show of each of its actions, and its pacing."""

    campaign: str
    costs: dict[str, float]
    daily_budget: float
    pacing: Literal["none", "even"] = "even"
    burst: float = 0.05

    def __post_init__(self) -> None:
        if not self.campaign or "{" in self.campaign or "}" in self.campaign:
            raise ValueError(
                f"campaign name must be non-empty and free of braces (it is the Redis Cluster hash tag of its "
                f"counters); got {self.campaign!r}"
            )
        if not math.isfinite(self.daily_budget) or self.daily_budget <= 0:
            raise ValueError(
                f"campaign {self.campaign!r}: daily_budget must be a positive number; got {self.daily_budget}"
            )
        if _micros(self.daily_budget) >= 2**53:
            raise ValueError(
                f"campaign {self.campaign!r}: daily_budget {self.daily_budget} is too large for exact micro-units"
            )
        if self.pacing not in PACINGS:
            raise ValueError(f"campaign {self.campaign!r}: pacing must be one of {PACINGS}; got {self.pacing!r}")
        if not math.isfinite(self.burst) or not 0 <= self.burst <= 1:
            raise ValueError(
                f"campaign {self.campaign!r}: burst must be a share of the budget in [0, 1]; got {self.burst}"
            )
        bad = {action: cost for action, cost in self.costs.items() if not math.isfinite(cost) or cost < 0}
        if bad:
            raise ValueError(f"campaign {self.campaign!r}: costs must be finite and >= 0; got {bad}")


class Charge:
    """What one `spend` did: `paid` when every campaign of the action charged it (truthy then), and the counters
    it did charge, (key, micro-units): all of them when paid, those whose slot said yes when another refused.
    (A plain class with slots: one is made per reservation, and a frozen dataclass costs ~1 µs more to build.)"""

    __slots__ = ("paid", "charged")

    def __init__(self, paid: bool, charged: tuple[tuple[str, int], ...] = ()):
        self.paid = paid
        self.charged = charged

    def __bool__(self) -> bool:
        return self.paid

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Charge) and (self.paid, self.charged) == (other.paid, other.charged)

    def __repr__(self) -> str:
        return f"Charge(paid={self.paid}, charged={self.charged})"


FREE = Charge(True)  # an action no campaign pays for
REFUSED = Charge(False)


class CampaignBudgets:
    """Paced daily campaign budgets in Redis; thread-safe when `client` is (a pooled redis.Redis is)."""

    def __init__(
        self,
        client: redis.Redis,
        budgets: list[Budget],
        prefix: str = "hyperlift:budget",
        clock: Callable[[], float] = time.time,
    ):
        names = [budget.campaign for budget in budgets]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate campaign names: {duplicates}; merge them or rename one (the name is the key)")
        self.client = client
        self.budgets = {budget.campaign: budget for budget in budgets}
        self.prefix = hash_tag_free(prefix, "key prefix")
        self.clock = clock
        self._spend = client.register_script(_SPEND)
        # action → its campaigns, filled on first use (as FrequencyCaps.rules_for: fixed budgets, bounded actions).
        self._campaigns_by_action: dict[str, tuple[Budget, ...]] = {}

    def load_scripts(self) -> None:
        """Load the Lua script into Redis now (pipelined calls use EVALSHA), and adopt the counters of the key layout
        before this one (`adopt_day_tagged_counters`); raises RedisError."""
        self.client.script_load(self._spend.script)
        self.adopt_day_tagged_counters()

    def adopt_day_tagged_counters(self, now: float | None = None) -> int:
        """Move today's and yesterday's counters from the layout before (`<prefix>:{<day>}:<campaign>`, one hash tag
        per day) onto their keys now, so a deployment upgraded in the middle of a day keeps the day's spend. GETDEL
        takes each old counter once (many workers start at once: one of them gets it), then INCRBY adds it. Two
        round trips at start-up, none when there is nothing to move; returns the counters moved."""
        now = self.clock() if now is None else now
        pairs = [(f"{self.prefix}:{{{day.isoformat()}}}:{campaign}", self.key(campaign, day))
                 for day in (_utc_day(now), _utc_day(now - DAY_S)) for campaign in self.budgets]
        taking = RoundTrip(self.client)
        taking.command_stack = [("GETDEL", old) for old, _ in pairs]
        moving = RoundTrip(self.client)
        for (_, new), value in zip(pairs, taking.execute()):
            if value is not None:
                moving.command_stack += [("INCRBY", new, int(value)), ("EXPIRE", new, COUNTER_TTL_S)]
        moving.execute()
        return len(moving.command_stack) // 2

    def key(self, campaign: str, day: date) -> str:
        """Redis key of a campaign's micro-unit counter on a UTC day; its `{campaign:day}` hash tag gives every
        campaign of a day its own Redis Cluster slot."""
        return f"{self.prefix}:{{{campaign}:{day.isoformat()}}}"

    def campaigns_of(self, action: str) -> tuple[Budget, ...]:
        """The budgets that pay for `action`."""
        campaigns = self._campaigns_by_action.get(action)
        if campaigns is None:
            campaigns = self._campaigns_by_action[action] = tuple(b for b in self.budgets.values() if action in b.costs)
        return campaigns

    def allowance(self, budget: Budget, now: float) -> float:
        """Spend allowed so far today: none → B; even → min(B, B·(elapsed share of the UTC day) + burst·B)."""
        if budget.pacing == "none":
            return budget.daily_budget
        elapsed_share = (now - _midnight(now)) / DAY_S
        return min(budget.daily_budget, budget.daily_budget * elapsed_share + budget.burst * budget.daily_budget)

    def queue_exhausted(
        self, pipe: RoundTrip, actions: list[str], now: float | None = None
    ) -> Callable[[list], set[str]]:
        """Queue the read of `exhausted` on `pipe` (shared with other reads of the decision); the returned function
        turns the pipeline's replies into the set of actions whose campaign cannot pay for them now."""
        now = self.clock() if now is None else now
        day = _utc_day(now)
        wanted = set(actions)
        campaigns = [b for b in self.budgets.values() if not wanted.isdisjoint(b.costs)]  # O(campaigns), not O(actions)
        start = len(pipe.command_stack)
        if campaigns:
            pipe.mget([self.key(budget.campaign, day) for budget in campaigns])

        def parse(replies: list) -> set[str]:
            out: set[str] = set()
            for budget, value in zip(campaigns, replies[start] if campaigns else ()):
                room = _micros(self.allowance(budget, now)) - int(value or 0)
                out.update(a for a, cost in budget.costs.items() if a in wanted and _micros(cost) > room)
            return out

        return parse

    def exhausted(self, actions: list[str], now: float | None = None) -> set[str]:
        """Actions whose campaign cannot pay their cost now (read-only, one round trip; raises RedisError)."""
        pipe = RoundTrip(self.client)
        parse = self.queue_exhausted(pipe, actions, now)
        return parse(pipe.execute())  # no commands: no round trip

    def _spend_calls(self, action: str, now: float | None) -> list[tuple[list[str], list[int], list[int]]]:
        """One script call per slot of the action's counters: (keys, ARGV, each key's cost in micro-units)."""
        campaigns = self.campaigns_of(action)
        if not campaigns:
            return []
        now = self.clock() if now is None else now
        day = _utc_day(now)
        if len(campaigns) == 1:  # the common case: one key, one slot, nothing to group
            budget = campaigns[0]
            cost = _micros(budget.costs[action])
            return [([self.key(budget.campaign, day)], [COUNTER_TTL_S, cost, _micros(self.allowance(budget, now))],
                     [cost])]
        calls: dict[int, tuple[list[str], list[int], list[int]]] = {}
        for budget in campaigns:
            key, cost = self.key(budget.campaign, day), _micros(budget.costs[action])
            keys, args, costs = calls.setdefault(slot(key), ([], [COUNTER_TTL_S], []))
            keys.append(key)
            args += [cost, _micros(self.allowance(budget, now))]
            costs.append(cost)
        return list(calls.values())

    def spend(self, action: str, now: float | None = None) -> bool:
        """Charge the action's cost to all its campaigns if each can afford it now; else charge none (a campaign
        that charged while another refused is handed back before this returns).

        One round trip (two after a partial charge); raises RedisError when Redis fails. Actions in no campaign →
        paid, nothing charged.
        """
        pipe = RoundTrip(self.client)
        charge = self.queue_spend(pipe, action, now)(pipe.execute(raise_on_error=False))
        if not charge and charge.charged:
            self.refund(action, charge=charge)
        return charge.paid

    def queue_spend(self, pipe: RoundTrip, action: str, now: float | None = None) -> Callable[[list], Charge]:
        """Queue `spend` on `pipe`, one script per slot (run it with `execute(raise_on_error=False)`); the returned
        function reads the replies into a `Charge` (running a script directly if Redis had flushed its script
        cache). A partial charge is the caller's to hand back (`queue_refund(..., charge=)`)."""
        calls = self._spend_calls(action, now)
        if not calls:
            return lambda replies: FREE
        index = len(pipe.command_stack)
        for keys, args, _ in calls:
            pipe.evalsha(self._spend.sha, len(keys), *keys, *args)
        if len(calls) == 1 and len(calls[0][0]) == 1:
            (key,), args, (cost,) = calls[0]

            def read_one(replies: list) -> Charge:
                paid = script_reply(replies[index], lambda: self._spend(keys=[key], args=args))
                return Charge(True, ((key, cost),)) if paid else REFUSED

            return read_one

        def read(replies: list) -> Charge:
            charged: list[tuple[str, int]] = []
            paid = True
            for offset, (keys, args, costs) in enumerate(calls):
                rerun = lambda keys=keys, args=args: self._spend(keys=keys, args=args)  # noqa: E731
                if script_reply(replies[index + offset], rerun):
                    charged += zip(keys, costs)
                else:
                    paid = False
            return Charge(paid, tuple(charged))

        return read

    def refund(self, action: str, now: float | None = None, charge: Charge | None = None) -> None:
        """Take back a charge whose show did not happen (e.g. a frequency cap refused it); one round trip."""
        pipe = RoundTrip(self.client)
        self.queue_refund(pipe, action, now, charge)
        pipe.execute()  # no commands: no round trip

    def queue_refund(
        self, pipe: RoundTrip, action: str, now: float | None = None, charge: Charge | None = None
    ) -> None:
        """Queue `refund` on `pipe`: the counters `charge` charged (exactly those, on the day it charged them), else
        the action's cost on every campaign's counter of today."""
        if charge is not None:
            for key, cost in charge.charged:
                pipe.decrby(key, cost)
            return
        day = _utc_day(self.clock() if now is None else now)
        for budget in self.campaigns_of(action):
            pipe.decrby(self.key(budget.campaign, day), _micros(budget.costs[action]))

    def spent(self, campaign: str, day: date | None = None) -> float:
        """Spent by the campaign on a UTC day (today by the clock unless given); raises RedisError."""
        if campaign not in self.budgets:
            raise KeyError(f"no budget for campaign {campaign!r}; known: {sorted(self.budgets)}")
        value = self.client.get(self.key(campaign, _utc_day(self.clock()) if day is None else day))
        return int(value or 0) / MICROS


def _micros(amount: float) -> int:
    """Integer micro-units, the unit every counter and comparison uses."""
    return round(amount * MICROS)


def _utc_day(now: float) -> date:
    """The UTC calendar day of a Unix time (Unix time has no leap seconds: every day is DAY_S long)."""
    return date.fromordinal(_EPOCH_ORDINAL + int(now // DAY_S))


def _midnight(now: float) -> float:
    """Unix time of the start of `now`'s UTC day."""
    return (now // DAY_S) * DAY_S


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

