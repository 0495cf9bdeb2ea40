from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from simulator import ShopConfig


def test_defaults_match_the_documented_world() -> None:
    c = ShopConfig()
    assert (c.n_users, c.n_items, c.n_categories, c.n_days, c.seed) == (20_000, 500, 8, 30, 7)
    assert c.start == datetime(2026, 10, 1, tzinfo=timezone.utc)
    assert c.sessions_per_user_day == 0.25
    assert c.corrupt_rate == 0.002
    assert c.attribution_window_hours == 72.0
    assert c.mean_purchase_delay_hours == 10.0
    assert c.delay_model == "exponential"
    assert c.end == datetime(2026, 10, 31, tzinfo=timezone.utc)


def test_end_follows_n_days() -> None:
    assert ShopConfig(n_days=3).end - ShopConfig(n_days=3).start == timedelta(days=3)


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ShopConfig().n_users = 3  # type: ignore[misc]


def test_from_env_reads_every_variable() -> None:
    env = {
        "HYPERLIFT_SIM_USERS": "123",
        "HYPERLIFT_SIM_ITEMS": "45",
        "HYPERLIFT_SIM_DAYS": "6",
        "HYPERLIFT_SIM_SEED": "99",
    }
    c = ShopConfig.from_env(env)
    assert (c.n_users, c.n_items, c.n_days, c.seed) == (123, 45, 6, 99)


def test_from_env_without_variables_gives_defaults() -> None:
    assert ShopConfig.from_env({}) == ShopConfig()


@pytest.mark.parametrize("variable", ["HYPERLIFT_SIM_USERS", "HYPERLIFT_SIM_ITEMS", "HYPERLIFT_SIM_DAYS", "HYPERLIFT_SIM_SEED"])
@pytest.mark.parametrize("bad", ["abc", "0", "-5", "1.5"])
def test_from_env_rejects_non_positive_ints_naming_the_variable(variable: str, bad: str) -> None:
    with pytest.raises(ValueError, match=variable):
        ShopConfig.from_env({variable: bad})


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_users": 0}, "n_users"),
        ({"n_items": -1}, "n_items"),
        ({"n_categories": 0}, "n_categories"),
        ({"n_categories": 3}, "n_categories"),
        ({"n_days": 0}, "n_days"),
        ({"n_items": 5, "n_categories": 8}, "n_items"),
        ({"corrupt_rate": 1.0}, "corrupt_rate"),
        ({"corrupt_rate": -0.1}, "corrupt_rate"),
        ({"sessions_per_user_day": 0.0}, "sessions_per_user_day"),
        ({"attribution_window_hours": 0.0}, "attribution_window_hours"),
        ({"mean_purchase_delay_hours": -1.0}, "mean_purchase_delay_hours"),
        ({"delay_model": "gamma"}, "delay_model"),
        ({"start": datetime(2026, 10, 1)}, "start"),
        ({"n_users": 2.5}, "n_users"),
    ],
)
def test_validation_names_the_bad_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ShopConfig(**kwargs)  # type: ignore[arg-type]


def test_zero_corrupt_rate_is_allowed() -> None:
    assert ShopConfig(corrupt_rate=0.0).corrupt_rate == 0.0
