"""Per-item frequency caps: each item at most `limit` shows to one user in any sliding window of `window_s`.

An item surface serves a few of thousands of items, so the action caps (serving/policy/caps.py: one sorted set per
rule counting every covered action together) do not fit: here each (user, rule) pair has one sorted set whose
members are `<item id>|<show token>` scored by the show's time in integer milliseconds, and an item's count is the
number of its members inside the window. The decision reads the sets in the round trip that fetches the user's
vector (advisory: which items are capped now), and reserves its slate with one Lua script that trims, counts and
records atomically, so concurrent decisions for one user never show an item past its limit. The script keeps the
slate's leading items up to the first refused one (as the action caps do), and records nothing for the rest.

A user's keys share the hash tag `{user_key}`; Redis failures propagate as `redis.exceptions.RedisError`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence

import redis

from serving.decision.surfaces import ItemCapConfig
from serving.policy.scripts import hash_tag_free, script_reply
from serving.store.round_trip import RoundTrip

# KEYS: one sorted set per rule. ARGV: now_ms, token, n, item_1 … item_n, then per rule: cutoff_ms, limit, window_ms.
# Returns how many leading items of the slate were recorded (the slate stops at the first item over a limit).
_RESERVE = """
local now, token, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local counts = {}
for i, key in ipairs(KEYS) do
  local base = 3 + n + 3 * (i - 1)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[base + 1])
  local c = {}
  for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    local item = string.match(member, '^([^|]+)|')
    c[item] = (c[item] or 0) + 1
  end
  counts[i] = c
end
local kept = n
for j = 1, n do
  local item = ARGV[3 + j]
  for i = 1, #KEYS do
    if (counts[i][item] or 0) >= tonumber(ARGV[3 + n + 3 * (i - 1) + 2]) then
      kept = j - 1
      break
    end
  end
  if kept < n then break end
end
for i, key in ipairs(KEYS) do
  for j = 1, kept do
    redis.call('ZADD', key, 'NX', now, ARGV[3 + j] .. '|' .. token)
  end
  if kept > 0 then redis.call('PEXPIRE', key, ARGV[3 + n + 3 * (i - 1) + 3]) end
end
return kept
"""


class ItemCaps:
    """The per-item caps of one item surface, in Redis; thread-safe when `client` is (a pooled redis.Redis is)."""

    def __init__(
        self, client: redis.Redis, rules: Sequence[ItemCapConfig], prefix: str = "hyperlift:item_caps",
        clock: Callable[[], float] = time.time,
    ):
        self.client = client
        self.rules = list(rules)
        self.prefix = hash_tag_free(prefix, "key prefix")
        self.clock = clock
        self._reserve = client.register_script(_RESERVE)

    def load_scripts(self) -> None:
        """Load the Lua script into Redis now (pipelined calls use EVALSHA; raises RedisError)."""
        if self.rules:
            self.client.script_load(self._reserve.script)

    def key(self, user_key: str, rule: ItemCapConfig) -> str:
        """Redis key of one user's item shows under one rule."""
        return f"{self.prefix}:{{{hash_tag_free(user_key, 'user_key')}}}:{rule.name}"

    def queue_capped(self, pipe: RoundTrip, user_key: str, now: float | None = None) -> Callable[[list], set[int]]:
        """Queue the reads of every rule's window on `pipe`; the returned function gives the items at their limit."""
        now_ms = round((self.clock() if now is None else now) * 1000)
        start = len(pipe.command_stack)
        for rule in self.rules:  # RoundTrip has no ZRANGEBYSCORE helper: the command goes on its stack as redis-py's
            pipe.command_stack.append(
                ("ZRANGEBYSCORE", self.key(user_key, rule), f"({now_ms - rule.window_s * 1000}", "+inf")
            )

        def parse(replies: list) -> set[int]:
            capped: set[int] = set()
            for rule, members in zip(self.rules, replies[start:start + len(self.rules)]):
                counts = Counter(bytes(m).split(b"|", 1)[0] for m in members)
                capped.update(int(item) for item, n in counts.items() if n >= rule.limit)
            return capped

        return parse

    def capped(self, user_key: str, now: float | None = None) -> set[int]:
        """Items at their limit for this user now (read-only, one round trip; raises RedisError)."""
        pipe = RoundTrip(self.client)
        return self.queue_capped(pipe, user_key, now)(pipe.execute())

    def _reserve_call(self, user_key: str, items: Sequence[int], token: str, now: float | None) -> tuple[list, list]:
        if not token or "|" in token:
            raise ValueError(f"token must be a non-empty string without '|' (the decision's token); got {token!r}")
        now_ms = round((self.clock() if now is None else now) * 1000)
        args: list[str | int] = [now_ms, token, len(items), *(int(i) for i in items)]
        for rule in self.rules:
            args += [now_ms - rule.window_s * 1000, rule.limit, rule.window_s * 1000]
        return [self.key(user_key, rule) for rule in self.rules], args

    def queue_reserve(
        self, pipe: RoundTrip, user_key: str, items: Sequence[int], token: str, now: float | None = None
    ) -> Callable[[list], int]:
        """Queue the reservation of `items` (slot order) on `pipe` (run with raise_on_error=False); the returned
        function gives how many leading items were recorded (all of them when there are no rules)."""
        if not self.rules or not items:
            return lambda replies: len(items)
        keys, args = self._reserve_call(user_key, items, token, now)
        index = len(pipe.command_stack)
        pipe.evalsha(self._reserve.sha, len(keys), *keys, *args)
        return lambda replies: int(script_reply(replies[index], lambda: self._reserve(keys=keys, args=args)))

    def reserve(self, user_key: str, items: Sequence[int], token: str, now: float | None = None) -> int:
        """Record the shows of `items` up to the first one at its limit, atomically; returns how many were recorded."""
        pipe = RoundTrip(self.client)
        kept = self.queue_reserve(pipe, user_key, items, token, now)
        return kept(pipe.execute(raise_on_error=False))
