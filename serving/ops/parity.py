"""The parity caps of fair exposure (training/fairness.py, docs/guards.md "Fair exposure"), as serving applies them.

The `fair_exposure` asset writes, when its configuration enforces them, one Redis hash (`key`):
`surface|dimension|group` → keep-probability. Every worker polls it like safe mode and the cautious switch; a decision
of a capped group is answered with the neutral action with probability 1 − keep (the product over the user's
groups), drawn before the policy chooses, logged as the fallback `parity_cap` with probability 1. The decision path
pays one dict lookup when no cap is in force on its surface. When Redis cannot be read the last caps are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import cast

import redis

from serving.core.polling import Poller
from serving.ops.redaction import redis_failure
from training.fairness import DIMENSIONS, PARITY_CAP

log = logging.getLogger(__name__)

PARITY_KEY = "hyperlift:parity_caps"
__all__ = ["PARITY_CAP", "PARITY_KEY", "ParityCaps", "parse_caps"]


def parse_caps(raw: Mapping) -> dict[str, dict[tuple[str, str], float]]:
    """The hash as {surface: {(dimension, group): keep}}; malformed fields and values outside (0, 1] are skipped
    (logged): a cap can only lower exposure, and never to nothing."""
    caps: dict[str, dict[tuple[str, str], float]] = {}
    for field, value in raw.items():
        name = field.decode() if isinstance(field, bytes) else str(field)
        parts = name.split("|")
        try:
            keep = float(value)
        except (TypeError, ValueError):
            keep = -1.0
        if len(parts) != 3 or parts[1] not in DIMENSIONS or not 0.0 < keep <= 1.0:
            log.warning("parity caps: field %r = %r ignored (want surface|dimension|group → keep in (0, 1])", name,
                        value)
            continue
        caps.setdefault(parts[0], {})[(parts[1], parts[2])] = keep
    return caps


class ParityCaps(Poller):
    """Reads and writes the caps; `keep_for(surface, features)` is what a decision asks."""

    def __init__(self, client: redis.Redis, key: str = PARITY_KEY, poll_s: float = 1.0):
        super().__init__(poll_s, "parity-caps-poll")
        self.client = client
        self.key = key
        self.poll_failures = 0
        self._caps: dict[str, dict[tuple[str, str], float]] = {}

    @property
    def count(self) -> int:
        """Caps in force (every surface)."""
        return sum(len(c) for c in self._caps.values())

    def caps(self) -> dict[str, dict[tuple[str, str], float]]:
        return {surface: dict(c) for surface, c in self._caps.items()}

    def keep_for(self, surface: str, features: Mapping[str, object]) -> float:
        """The probability that a decision of this user on `surface` is left to the policy (1.0: no cap applies)."""
        caps = self._caps.get(surface)
        if not caps:
            return 1.0
        keep = 1.0
        for dimension, group_of in DIMENSIONS.items():
            cap = caps.get((dimension, group_of(features)))  # type: ignore[arg-type]
            if cap is not None:
                keep *= cap
        return keep

    def replace(self, fields: Mapping[str, float]) -> None:
        """Put exactly these caps in force (none when empty), atomically; raises redis.RedisError when Redis cannot
        take them."""
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.key)
        if fields:
            pipe.hset(self.key, mapping={k: repr(float(v)) for k, v in fields.items()})
        pipe.execute()
        self._caps = parse_caps(dict(fields))

    def refresh(self) -> None:
        try:
            raw = cast(dict, self.client.hgetall(self.key))
        except redis.exceptions.RedisError as exc:
            self.poll_failures += 1
            log.warning("parity-caps poll failed (keeping %d caps): %s", self.count, redis_failure(exc))
            return
        self._caps = parse_caps(raw)
