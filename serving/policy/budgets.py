"""Campaign budgets with pacing: a show is paid for only if every campaign it belongs to can afford it now.

Each campaign has a daily budget B for the UTC day. Its allowance at time t is what it may have spent so far:
pacing "none" → B; pacing "even" → min(B, B · (share of the UTC day elapsed) + burst · B), so spend follows a
straight line through the day and may run `burst` · B ahead of it. `spend` charges an action's cost to each of its
campaigns if, for every one of them, spent + cost ≤ allowance, and to none of them otherwise.

Counters are integers in micro-units (round(amount · 1e6)), one per campaign per UTC day, expiring two days after
their last charge: sums are exact (no INCRBYFLOAT drift), and a new day starts from zero. Amounts are therefore
resolved to 1e-6 currency units.

Why Lua: read-check-increment done in separate round trips lets concurrent decisions all see room for the last
show and all charge it. One script reads, checks and increments every campaign of the action, and Redis runs it
atomically, so spend never passes the allowance under any concurrency and a refusal charges nothing.
`exhausted` is a single read-only MGET (one round trip); it is advisory, `spend` is the authority.

All counters of a day share the hash tag `{YYYY-MM-DD}`, so a multi-campaign script's keys sit on one Redis
Cluster slot (every spend of the day goes to that slot's shard). Redis failures propagate as
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

from serving.policy.scripts import hash_tag_free, script_reply

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
        if not self.campaign:
            raise ValueError("campaign name must be non-empty")
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
        """Load the Lua script into Redis now (pipelined calls use EVALSHA; raises RedisError)."""
        self.client.script_load(self._spend.script)

    def key(self, campaign: str, day: date) -> str:
        """Redis key of a campaign's micro-unit counter on a UTC day; the `{day}` hash tag keeps a day on one slot."""
        return f"{self.prefix}:{{{day.isoformat()}}}:{campaign}"

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
        self, pipe: redis.client.Pipeline, actions: list[str], now: float | None = None
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
        pipe = self.client.pipeline(transaction=False)
        parse = self.queue_exhausted(pipe, actions, now)
        return parse(pipe.execute())  # an empty pipeline makes no round trip

    def _spend_call(self, action: str, now: float | None) -> tuple[list[str], list[int]]:
        campaigns = self.campaigns_of(action)
        now = self.clock() if now is None else now
        day = _utc_day(now)
        args: list[int] = [COUNTER_TTL_S]
        for budget in campaigns:
            args += [_micros(budget.costs[action]), _micros(self.allowance(budget, now))]
        return [self.key(budget.campaign, day) for budget in campaigns], args

    def spend(self, action: str, now: float | None = None) -> bool:
        """Charge the action's cost to all its campaigns if each can afford it now, atomically; else charge none.

        One round trip; raises RedisError when Redis fails. Actions in no campaign → True, nothing charged.
        """
        keys, args = self._spend_call(action, now)
        return True if not keys else bool(self._spend(keys=keys, args=args))

    def queue_spend(self, pipe: redis.client.Pipeline, action: str, now: float | None = None) -> Callable[[list], bool]:
        """Queue `spend` on `pipe` (run it with `execute(raise_on_error=False)`); the returned function reads its
        reply (running the script directly if Redis had flushed its script cache)."""
        keys, args = self._spend_call(action, now)
        if not keys:
            return lambda replies: True
        index = len(pipe.command_stack)
        pipe.evalsha(self._spend.sha, len(keys), *keys, *args)
        return lambda replies: bool(script_reply(replies[index], lambda: self._spend(keys=keys, args=args)))

    def refund(self, action: str, now: float | None = None) -> None:
        """Take back a charge whose show did not happen (e.g. a frequency cap refused it); one round trip."""
        pipe = self.client.pipeline(transaction=False)
        self.queue_refund(pipe, action, now)
        pipe.execute()  # an empty pipeline makes no round trip

    def queue_refund(self, pipe: redis.client.Pipeline, action: str, now: float | None = None) -> None:
        """Queue `refund` on `pipe`."""
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

