"""The item index a surface serves, and the thread that swaps in each new published version without dropping a request.

The pattern of serving/decision/champion.py's ChampionWatcher: the new version is loaded and checked entirely off
the request path, then one attribute is rebound. A decision reads `holder.served` once and keeps that object to its
end, so a swap in the middle of a decision changes nothing for it; the version it used goes into its record.
A version that fails to load (half-pruned folder, wrong dimension) is counted and logged, and the one serving stays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.core.polling import Poller
from serving.decision.candidates import MISSING_INDEX_HINT, ItemIndex, current_version
from serving.ops.metrics import ServiceMetrics

log = logging.getLogger(__name__)
UNVERSIONED = "unversioned"  # an index `save`d into the folder without the CURRENT pointer (before versions)


@dataclass(frozen=True)
class ServedIndex:
    """One loaded version: the index, the version it came from, and its popular items (best first)."""

    index: ItemIndex
    version: str
    popular: np.ndarray | None  # positions of the items by popularity, best first; None without popularity

    @classmethod
    def of(cls, index: ItemIndex) -> ServedIndex:
        """Precompute what the request path needs once per version (the popularity order)."""
        popular = None if index.popularity is None else np.argsort(-index.popularity, kind="stable")
        return cls(index, index.version or UNVERSIONED, popular)


class ItemIndexHolder(Poller):
    """The index one item surface serves (`served`, None until a version loads) and its refresh."""

    def __init__(
        self, surface: str, root: Path, ef_search: int, dim: int, metrics: ServiceMetrics, interval_s: float,
    ):
        self.surface = surface
        self.root = Path(root)
        self.ef_search = ef_search
        self.dim = dim
        self.metrics = metrics
        self.served: ServedIndex | None = None
        self._failed_version: str | None = "<never tried>"
        super().__init__(interval_s, f"item-index-{surface}")

    def refresh(self) -> bool:
        """Load the published version if it differs from the one serving and swap it in; True when it swapped."""
        version = current_version(self.root)
        serving = self.served
        if serving is not None and (version is None or version == serving.index.version):
            return False  # nothing newer published (an unversioned folder never changes under a running service)
        try:
            loaded = ItemIndex.load(self.root, self.ef_search)
            if loaded.dim != self.dim:
                raise ValueError(f"item vectors have {loaded.dim} components; the user vectors have {self.dim}")
        except (OSError, ValueError, RuntimeError) as exc:  # faiss raises RuntimeError for an unreadable graph
            if version != self._failed_version:  # once per version, not every poll
                log.error("surface %s: could not load the item index %s under %s (%s); %s", self.surface, version,
                          self.root, exc, "keeping the serving one" if serving else MISSING_INDEX_HINT)
                self._failed_version = version
            self.metrics.item_index_refresh_failures.labels(self.surface).inc()
            return False
        self.served = ServedIndex.of(loaded)  # the swap: one reference rebound
        self._failed_version = None
        self.metrics.item_index_swaps.labels(self.surface).inc()
        log.info("surface %s: now serving item index %s (%d items; was %s)", self.surface, self.served.version,
                 len(loaded.item_ids), serving.version if serving else None)
        return True
