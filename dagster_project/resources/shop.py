"""The simulated shop as a Dagster resource: it plays the outside world that emits events."""

from __future__ import annotations

from datetime import datetime

import dagster as dg

from simulator import ShopConfig


class ShopResource(dg.ConfigurableResource):
    """Sizes and seed of the simulated shop (from HYPERLIFT_SIM_* via ShopConfig.from_env)."""

    n_users: int
    n_items: int
    n_days: int
    seed: int
    start: str  # ISO-8601 UTC

    @classmethod
    def from_config(cls, config: ShopConfig) -> "ShopResource":
        """Resource holding the values of a ShopConfig."""
        return cls(
            n_users=config.n_users, n_items=config.n_items, n_days=config.n_days, seed=config.seed,
            start=config.start.isoformat(),
        )

    def config(self) -> ShopConfig:
        """The ShopConfig these values describe."""
        return ShopConfig(
            n_users=self.n_users, n_items=self.n_items, n_days=self.n_days, seed=self.seed,
            start=datetime.fromisoformat(self.start),
        )
