"""Shared small worlds for the simulator tests (built once per session: they are deterministic)."""

from __future__ import annotations

import pytest

from simulator import ShopConfig, Shop, Simulation, build_shop, simulate

SMALL = ShopConfig(n_users=500, n_days=5, seed=11)
# Big enough for Monte-Carlo checks through the event stream (~50k sessions), still ~1 s to build.
MEDIUM = ShopConfig(n_users=10_000, n_days=21, seed=5, corrupt_rate=0.0)


@pytest.fixture(scope="session")
def small_shop() -> Shop:
    return build_shop(SMALL)


@pytest.fixture(scope="session")
def small_sim(small_shop: Shop) -> Simulation:
    return simulate(small_shop)


@pytest.fixture(scope="session")
def medium_shop() -> Shop:
    return build_shop(MEDIUM)


@pytest.fixture(scope="session")
def medium_sim(medium_shop: Shop) -> Simulation:
    return simulate(medium_shop)
