"""Per-user frequency caps: at most `limit` shows of the covered actions in any sliding window of `window_s`.

Each (user, rule) pair has one sorted set of the user's shows, member = the show's token (the decision id),
score = its time in integer milliseconds (exact in a double, so window edges never wobble). A show at time t
counts at time `now` while now − window < t; shows scored after `now` (a replica whose clock runs ahead) count too,
which errs on the side of the cap.

Why Lua: check-then-record done in two round trips lets concurrent decisions for one user all see "under the
limit" and all record a show. `reserve` trims, checks every rule covering the action and records in all of them in
one script, which Redis runs atomically, so the limit holds under any concurrency and a refusal records nothing in
any rule. `blocked` is a read-only pipeline (one round trip); it is advisory, `reserve` is the authority.

Keys: `hyperlift:caps:{<user_key>}:<rule>`. A user's keys share the hash tag `{user_key}`, so one script's keys
sit on one Redis Cluster slot, and users spread over every slot.
Redis failures propagate as `redis.exceptions.RedisError`; the caller decides the fallback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from serving.policy.scripts import hash_tag_free, script_reply
from serving.store.round_trip import RoundTrip

# KEYS: the rule sets covering the action. ARGV: now_ms, token, then per key: cutoff_ms, limit, window_ms.
# A token already in a set is a retried call: it needs no room there and is not added twice (ZADD NX).
_RESERVE = """
local now, token = ARGV[1], ARGV[2]
for i, key in ipairs(KEYS) do
  local base = 3 * i
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[base])
  if not redis.call('ZSCORE', key, token) and redis.call('ZCARD', key) >= tonumber(ARGV[base + 1]) then
    return 0
  end
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'NX', now, token)
  redis.call('PEXPIRE', key, ARGV[3 * i + 2])
end
return 1
"""


@dataclass(frozen=True)
class CapRule:
    """At most `limit` shows of `actions` (None: every action but the control) in any window of `window_s`."""

    name: str
    window_s: int
    limit: int
    actions: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if not self.name or "{" in self.name or "}" in self.name:
            raise ValueError(f"cap rule name must be non-empty and free of braces; got {self.name!r}")
        if self.window_s < 1:
            raise ValueError(f"cap rule {self.name!r}: window_s must be >= 1 second; got {self.window_s}")
        if self.limit < 1:
            raise ValueError(
                f"cap rule {self.name!r}: limit must be >= 1 (drop the action to ban it); got {self.limit}"
            )
        if self.actions is not None:
            if isinstance(self.actions, str):
                raise TypeError(
                    f"cap rule {self.name!r}: actions must be a set of action ids, not the string {self.actions!r}"
                )
            object.__setattr__(self, "actions", frozenset(self.actions))
            if not self.actions:
                raise ValueError(f"cap rule {self.name!r}: actions must be None (every action) or non-empty")

    def covers(self, action: str, control: str) -> bool:
        """Whether this rule counts and limits `action` (never the control)."""
        return action != control and (self.actions is None or action in self.actions)


class FrequencyCaps:
    """Sliding-window frequency caps per user in Redis; thread-safe when `client` is (a pooled redis.Redis is)."""

    def __init__(
        self,
        client: redis.Redis,
        rules: list[CapRule],
        control: str,
        prefix: str = "hyperlift:caps",
        clock: Callable[[], float] = time.time,
    ):
        names = [rule.name for rule in rules]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate cap rule names: {duplicates}; each rule needs its own name (it is its key)")
        capped_control = [rule.name for rule in rules if rule.actions is not None and control in rule.actions]
        if capped_control:
            raise ValueError(f"the control {control!r} is never capped; remove it from rules {capped_control}")
        self.client = client
        self.rules = list(rules)
        self.control = control
        self.prefix = hash_tag_free(prefix, "key prefix")
        self.clock = clock
        self._reserve = client.register_script(_RESERVE)
        # action → its rules, filled on first use (the rules never change; actions are the model's, a bounded set):
        # measured ~2 µs per action and call, 50-candidate decisions ask ~100 times.
        self._rules_by_action: dict[str, tuple[CapRule, ...]] = {}

    def load_scripts(self) -> None:
        """Load the Lua script into Redis now (pipelined calls use EVALSHA; raises RedisError)."""
        self.client.script_load(self._reserve.script)

    def key(self, user_key: str, rule: CapRule) -> str:
        """Redis key of one user's shows under one rule; the `{user_key}` hash tag keeps a user on one slot."""
        return f"{self.prefix}:{{{hash_tag_free(user_key, 'user_key')}}}:{rule.name}"

    def rules_for(self, action: str) -> tuple[CapRule, ...]:
        """The rules that count and limit `action`."""
        rules = self._rules_by_action.get(action)
        if rules is None:
            rules = self._rules_by_action[action] = tuple(r for r in self.rules if r.covers(action, self.control))
        return rules

    def queue_blocked(
        self, pipe: RoundTrip, user_key: str, actions: list[str], now: float | None = None
    ) -> Callable[[list], set[str]]:
        """Queue the reads of `blocked` on `pipe` (shared with other reads of the decision); the returned function
        turns the pipeline's replies into the set of blocked actions."""
        now_ms = _millis(self.clock() if now is None else now)
        wanted = set(actions) - {self.control}  # the rules covering any of them, O(rules) rather than O(actions)
        rules = [r for r in self.rules if wanted and (r.actions is None or not r.actions.isdisjoint(wanted))]
        start = len(pipe.command_stack)
        for rule in rules:
            # Same count as `reserve` sees after trimming: everything scored after now − window.
            pipe.zcount(self.key(user_key, rule), f"({now_ms - rule.window_s * 1000}", "+inf")

        def parse(replies: list) -> set[str]:
            full = {rule.name for rule, count in zip(rules, replies[start:start + len(rules)]) if int(count) >= rule.limit}
            if not full:
                return set()
            return {action for action in actions if any(rule.name in full for rule in self.rules_for(action))}

        return parse

    def blocked(self, user_key: str, actions: list[str], now: float | None = None) -> set[str]:
        """Actions that would break a cap for this user now (read-only, one round trip; raises RedisError)."""
        pipe = RoundTrip(self.client)
        parse = self.queue_blocked(pipe, user_key, actions, now)
        return parse(pipe.execute())  # no commands: no round trip

    def _reserve_call(self, user_key: str, action: str, token: str, now: float | None) -> tuple[list[str], list]:
        if not token:
            raise ValueError("token must be a non-empty string (the decision id)")
        rules = self.rules_for(action)
        now_ms = _millis(self.clock() if now is None else now)
        args: list[str | int] = [now_ms, token]
        for rule in rules:
            args += [now_ms - rule.window_s * 1000, rule.limit, rule.window_s * 1000]
        return [self.key(user_key, rule) for rule in rules], args

    def reserve(self, user_key: str, action: str, token: str, now: float | None = None) -> bool:
        """Record the show `token` if every rule covering `action` has room, atomically; else record nothing.

        One round trip; raises RedisError when Redis fails. `token` must be unique per show (the decision id):
        reserving a token that is already recorded is an idempotent retry, not a second show.
        """
        keys, args = self._reserve_call(user_key, action, token, now)
        return True if not keys else bool(self._reserve(keys=keys, args=args))

    def queue_reserve(
        self, pipe: RoundTrip, user_key: str, action: str, token: str, now: float | None = None
    ) -> Callable[[list], bool]:
        """Queue `reserve` on `pipe` (run it with `execute(raise_on_error=False)`); the returned function reads
        its reply (loading the script and running it directly if Redis had flushed its script cache)."""
        keys, args = self._reserve_call(user_key, action, token, now)
        if not keys:
            return lambda replies: True
        index = len(pipe.command_stack)
        pipe.evalsha(self._reserve.sha, len(keys), *keys, *args)
        return lambda replies: bool(script_reply(replies[index], lambda: self._reserve(keys=keys, args=args)))

    def release(self, user_key: str, action: str, token: str) -> None:
        """Undo a reservation whose show did not happen (e.g. its campaign refused the charge); one round trip."""
        pipe = RoundTrip(self.client)
        self.queue_release(pipe, user_key, action, token)
        pipe.execute()  # no commands: no round trip

    def queue_release(self, pipe: RoundTrip, user_key: str, action: str, token: str) -> None:
        """Queue `release` on `pipe`."""
        for rule in self.rules_for(action):
            pipe.zrem(self.key(user_key, rule), token)

    def count(self, user_key: str, rule_name: str, now: float | None = None) -> int:
        """Shows of one user counted by one rule now (for tests and inspection)."""
        rule = next((rule for rule in self.rules if rule.name == rule_name), None)
        if rule is None:
            raise KeyError(f"no cap rule named {rule_name!r}; known: {[r.name for r in self.rules]}")
        now_ms = _millis(self.clock() if now is None else now)
        return int(self.client.zcount(self.key(user_key, rule), f"({now_ms - rule.window_s * 1000}", "+inf"))


def _millis(seconds: float) -> int:
    """Integer milliseconds: sorted-set scores that compare exactly."""
    return round(seconds * 1000)
