"""Configuration of the simulated shop: sizes, time span, seed, noise levels and the purchase-delay model.

Named shops (`SHOPS`, `shop_config(name)`):

* ``default``: today's shop, purchase delay ~ Exponential(mean_purchase_delay_hours = 10 h) for every action;
* ``late_weibull``: the same world with ``delay_model="weibull_by_action"``: delay | action a ~ Weibull(k_a, η_a),
  P(D > t) = exp(−(t/η_a)^k_a), shapes and means per action in `simulator.response.WEIBULL_DELAYS`. It exists so
  that delay correction is tested where the exponential of the seed paper is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

# Environment variables that override the defaults, mapped to the field they set.
ENV_VARIABLES: dict[str, str] = {
    "HYPERLIFT_SIM_USERS": "n_users",
    "HYPERLIFT_SIM_ITEMS": "n_items",
    "HYPERLIFT_SIM_DAYS": "n_days",
    "HYPERLIFT_SIM_SEED": "seed",
}

# The two category discounts in actions.py target categories 1 and 3, so a shop needs at least 4.
MIN_CATEGORIES = 4

# How long after its exposure a purchase lands (simulator.response implements each):
#   exponential        P(D > t) = exp(−t / mean_purchase_delay_hours), the same for every action (the default);
#   weibull_by_action  P(D > t) = exp(−(t / η_a)^k_a), shape and mean per action (mean_purchase_delay_hours unused).
DELAY_MODELS: tuple[str, ...] = ("exponential", "weibull_by_action")


@dataclass(frozen=True)
class ShopConfig:
    """Everything that determines a simulated shop; the same config always gives the same world."""

    n_users: int = 20_000
    n_items: int = 500
    n_categories: int = 8
    n_days: int = 30
    start: datetime = datetime(2026, 10, 1, tzinfo=timezone.utc)
    seed: int = 7
    sessions_per_user_day: float = 0.25
    corrupt_rate: float = 0.002
    attribution_window_hours: float = 72.0
    mean_purchase_delay_hours: float = 10.0
    delay_model: str = "exponential"

    def __post_init__(self) -> None:
        """Reject configs that cannot describe a shop, saying which field to fix and how."""
        for name in ("n_users", "n_items", "n_categories", "n_days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ShopConfig.{name} must be a positive int (>= 1), got {value!r}")
        if self.n_categories < MIN_CATEGORIES:
            raise ValueError(
                f"ShopConfig.n_categories must be >= {MIN_CATEGORIES} because the category discounts "
                f"target categories 1 and 3, got {self.n_categories}"
            )
        if self.n_items < self.n_categories:
            raise ValueError(
                f"ShopConfig.n_items ({self.n_items}) must be >= n_categories ({self.n_categories}) "
                "so that every category holds at least one item"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"ShopConfig.seed must be a non-negative int, got {self.seed!r}")
        if not isinstance(self.start, datetime) or self.start.tzinfo is None:
            raise ValueError(
                f"ShopConfig.start must be a timezone-aware datetime (e.g. tzinfo=timezone.utc), got {self.start!r}"
            )
        if not self.sessions_per_user_day > 0:
            raise ValueError(
                f"ShopConfig.sessions_per_user_day must be > 0, got {self.sessions_per_user_day!r}"
            )
        if not 0.0 <= self.corrupt_rate < 1.0:
            raise ValueError(
                f"ShopConfig.corrupt_rate must satisfy 0 <= corrupt_rate < 1, got {self.corrupt_rate!r}"
            )
        if not self.attribution_window_hours > 0:
            raise ValueError(
                f"ShopConfig.attribution_window_hours must be > 0, got {self.attribution_window_hours!r}"
            )
        if not self.mean_purchase_delay_hours > 0:
            raise ValueError(
                f"ShopConfig.mean_purchase_delay_hours must be > 0, got {self.mean_purchase_delay_hours!r}"
            )
        if self.delay_model not in DELAY_MODELS:
            raise ValueError(f"ShopConfig.delay_model must be one of {list(DELAY_MODELS)}, got {self.delay_model!r}")

    @property
    def end(self) -> datetime:
        """End of the simulated period (exclusive): start + n_days."""
        return self.start + timedelta(days=self.n_days)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **overrides: object) -> ShopConfig:
        """Build a config from HYPERLIFT_SIM_USERS/ITEMS/DAYS/SEED, falling back to the defaults."""
        values: dict[str, object] = {}
        for variable, field_name in ENV_VARIABLES.items():
            raw = environ.get(variable)
            if raw is None or raw.strip() == "":
                continue
            try:
                parsed = int(raw.strip())
            except ValueError:
                raise ValueError(f"{variable} must be a positive int, got {raw!r}") from None
            if parsed < 1:
                raise ValueError(f"{variable} must be a positive int, got {raw!r}")
            values[field_name] = parsed
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


# Named shops: the same world (users, items, responses) with different purchase-delay models.
SHOPS: dict[str, ShopConfig] = {
    "default": ShopConfig(),
    "late_weibull": ShopConfig(delay_model="weibull_by_action"),
}


def shop_config(name: str, **overrides: object) -> ShopConfig:
    """The named shop of SHOPS with fields overridden, e.g. shop_config("late_weibull", n_users=5_000)."""
    if name not in SHOPS:
        raise ValueError(f"unknown shop {name!r}; named shops are {sorted(SHOPS)} (see simulator.config.SHOPS)")
    return replace(SHOPS[name], **overrides)  # type: ignore[arg-type]
