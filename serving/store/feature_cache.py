"""Last-known-good features: the newest successful online read per (model version, user), kept in process.

When the online store cannot be read, a user seen recently is still scored on these values (the decision says
`fallback="last_known_good_features"`) instead of getting the neutral action. Bounded in size (LRU) and in age.

A consent revocation made after a user's read must not be undone by serving that read: `revoke(user)` makes every
entry of the user read before it unusable (serving/store/consent.py calls it for each revocation it sees).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from serving.store.features import FeatureRead


class LastKnownGood:
    """An LRU of FeatureReads that expire `max_age_s` after they were read."""

    def __init__(self, max_entries: int = 100_000, max_age_s: float = 300.0, clock: Callable[[], float] = time.monotonic):
        if max_entries < 1 or max_age_s <= 0:
            raise ValueError("max_entries must be >= 1 and max_age_s > 0")
        self.max_entries = max_entries
        self.max_age_s = max_age_s
        self.clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, FeatureRead]] = OrderedDict()
        self._lock = threading.Lock()
        self._revoked: dict[Hashable, float] = {}  # user → when a revocation was last seen

    def revoke(self, user: Hashable) -> None:
        """Entries of `user` (keys `(model version, user)`) read before now are not served again."""
        with self._lock:
            now = self.clock()
            self._revoked[user] = now
            if len(self._revoked) > self.max_entries:  # marks older than max_age_s guard nothing: no entry is older
                self._revoked = {u: t for u, t in self._revoked.items() if now - t <= self.max_age_s}

    def put(self, key: Hashable, read: FeatureRead) -> None:
        """Remember a successful read; evicts the least recently used entry when full."""
        with self._lock:
            self._entries[key] = (self.clock(), read)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def get(self, key: Hashable) -> FeatureRead | None:
        """The remembered read, or None when there is none or it is older than `max_age_s`."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            read_at, read = entry
            revoked_at = self._revoked.get(key[-1]) if self._revoked and isinstance(key, tuple) else None
            if self.clock() - read_at > self.max_age_s or (revoked_at is not None and read_at <= revoked_at):
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return read

    def __len__(self) -> int:
        return len(self._entries)
