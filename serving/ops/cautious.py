"""The per-surface cautious switch: the drift guards (training/guards/runner.py) turn it on for a surface on an
alarm; every worker polls it and applies the cautious policy to that surface's decisions (docs/guards.md).

The switch is one Redis hash (`key`: surface → `{"enabled", "reason", "since", "actor"}`), written by the guard or
by a person and read by each worker's poll thread every `poll_s` seconds, like safe mode (serving/ops/safe_mode.py).
The decision path only looks its surface up in a dict the poll replaced (`policy_for`): no Redis call, no
allocation. When Redis cannot be read the last state is kept (counted); a Redis restart that loses the hash turns
the switch off until the guard's next look re-asserts it (the guard re-writes it on every alarmed look).

The cautious policy (serving/conf/guards.yaml `cautious`):
- a share `neutral_share` of the surface's decisions is answered with the neutral action (fallback
  `cautious_neutral`, probability 1, like every fallback: off-policy estimators leave it out);
- the rest are decided by the normal pipeline with exploration lowered (epsilon capped at `epsilon`, softmax and
  Thompson temperatures × `temperature_factor`) and the uncertainty bonus set to `uncertainty_bonus` (0: off).
Their probabilities are logged as drawn, so they stay usable for off-policy evaluation.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import redis

from serving.core.polling import Poller
from serving.ops.redaction import redis_failure
from training.guards.config import CautiousConfig

log = logging.getLogger(__name__)

CAUTIOUS_KEY = "hyperlift:cautious"
CAUTIOUS_NEUTRAL = "cautious_neutral"  # the fallback reason of decisions the switch answered neutral


@dataclass(frozen=True)
class CautiousPolicy:
    """How a cautious surface decides (see the module docstring); `reason` is why it is on."""

    neutral_share: float
    epsilon: float
    temperature_factor: float
    uncertainty_bonus: float
    reason: str = ""

    @classmethod
    def of(cls, config: CautiousConfig, reason: str = "") -> CautiousPolicy:
        """The policy of the guards' configuration."""
        return cls(config.neutral_share, config.epsilon, config.temperature_factor, config.uncertainty_bonus, reason)

    def overrides(self, base: Mapping[str, object], epsilon: float, temperature: float) -> dict:
        """An experiment arm's `base` overrides made cautious: epsilon capped, temperature lowered, bonus set.
        `epsilon` and `temperature` are the surface's own (used when the arm overrides neither)."""
        out = dict(base)
        out["epsilon"] = min(float(out.get("epsilon", epsilon)), self.epsilon)  # type: ignore[arg-type]
        out["temperature"] = float(out.get("temperature", temperature)) * self.temperature_factor  # type: ignore[arg-type]
        out["uncertainty_bonus"] = self.uncertainty_bonus
        return out


class CautiousSwitch(Poller):
    """Reads and writes the per-surface switch; `policy_for(surface)` is a dict lookup (per decision)."""

    def __init__(self, client: redis.Redis, config: CautiousConfig, key: str = CAUTIOUS_KEY, poll_s: float = 1.0):
        super().__init__(poll_s, "cautious-poll")
        self.client = client
        self.config = config
        self.key = key
        self.poll_failures = 0
        self.records: dict[str, dict] = {}
        self._policies: dict[str, CautiousPolicy] = {}

    def policy_for(self, surface: str) -> CautiousPolicy | None:
        """The cautious policy while `surface` is cautious, else None."""
        return self._policies.get(surface)

    @property
    def surfaces(self) -> list[str]:
        """The surfaces that are cautious now."""
        return sorted(self._policies)

    def set(self, surface: str, enabled: bool, reason: str, actor: str) -> dict:
        """Turn `surface` cautious (or back to normal) for every worker; raises redis.RedisError when Redis cannot
        take it. Returns the record written."""
        record = {"enabled": enabled, "reason": reason, "since": time.time(), "actor": actor}
        self.client.hset(self.key, surface, json.dumps(record))
        self._adopt({**self.records, surface: record})
        log.warning("surface %s cautious %s (%s): %s", surface, "ON" if enabled else "off", actor, reason)
        return record

    def refresh(self) -> None:
        """Read every surface's state; keep the last one (counted) when Redis cannot be read."""
        try:
            raw = cast(dict, self.client.hgetall(self.key))  # a sync client: never an Awaitable
        except redis.exceptions.RedisError as exc:
            self.poll_failures += 1
            log.warning("cautious-switch poll failed (keeping %s): %s", self.surfaces, redis_failure(exc))
            return
        records = {}
        for surface, value in raw.items():
            try:
                records[surface.decode() if isinstance(surface, bytes) else surface] = json.loads(value)
            except ValueError:
                log.error("cautious switch %s holds an unreadable record for %r: ignored; rewrite it with "
                          "`python -m training.guards cautious`", self.key, surface)
        self._adopt(records)

    def _adopt(self, records: dict[str, dict]) -> None:
        self.records = records
        # One assignment: the decision path reads either the old or the new mapping, never a half-built one.
        self._policies = {s: CautiousPolicy.of(self.config, r.get("reason", "")) for s, r in records.items()
                          if r.get("enabled")}

    def start(self) -> None:
        """Read once now, then poll in a daemon thread."""
        self.refresh()
        super().start()
