"""The simulated shop: observable CRM/catalogue tables plus latent per-user traits the platform never sees."""

from __future__ import annotations

from dataclasses import dataclass, field
import numpy as np
import pandas as pd

from simulator.choice import expected_item_values
from simulator.config import ShopConfig

REGIONS: tuple[str, ...] = ("north", "south", "east", "west")
DEVICES: tuple[str, ...] = ("mobile", "desktop")

# Population parameters of base_logit; response.py standardises base_logit with these, not with the
# sample moments, so a user's effects do not depend on who else happens to be in the shop.
BASE_LOGIT_MEAN = -2.6
BASE_LOGIT_SD = 0.6

# Stream ids for np.random.default_rng([seed, stream, ...]); separate streams keep e.g. the item
# catalogue identical when only n_users changes.
STREAM_USERS = 1
STREAM_ITEMS = 2


@dataclass(frozen=True, eq=False)
class Shop:
    """A built world: config, observable tables (users, items) and latent per-user arrays indexed by user_id."""

    config: ShopConfig
    users: pd.DataFrame
    items: pd.DataFrame
    price_sensitivity: np.ndarray  # (n_users,) in (0, 1): how strongly price deters and discounts attract
    base_logit: np.ndarray  # (n_users,) logit of converting in a session without any promotion
    taste: np.ndarray  # (n_users, n_categories) rows sum to 1, peaked on a few categories
    activity: np.ndarray  # (n_users,) multiplier of sessions_per_user_day, mean ~1
    basket_value: np.ndarray  # (n_users,) E[list price of a purchased item]; drives the free-shipping effect
    basket_reference: float  # median basket_value: the "cheap buyer" threshold of free shipping
    item_category: np.ndarray = field(repr=False)  # items.category_id as int64 array, for fast indexing
    item_price: np.ndarray = field(repr=False)  # items.price as float64 array
    is_mobile: np.ndarray = field(repr=False)  # users.device == "mobile" as bool array

    @property
    def n_users(self) -> int:
        """Number of users (== config.n_users)."""
        return len(self.base_logit)

    @property
    def n_items(self) -> int:
        """Number of items (== config.n_items)."""
        return len(self.item_price)


def _build_items(config: ShopConfig) -> pd.DataFrame:
    """Catalogue: items spread over all categories, lognormal prices around category-specific levels."""
    rng = np.random.default_rng([config.seed, STREAM_ITEMS])
    # Category price levels from cheap (6) to premium (90), shuffled so category ids carry no order.
    levels = np.exp(np.linspace(np.log(6.0), np.log(90.0), config.n_categories))
    levels = rng.permutation(levels)
    # Round-robin then shuffle: every category gets at least one item.
    category = rng.permutation(np.arange(config.n_items) % config.n_categories).astype(np.int64)
    price = levels[category] * rng.lognormal(mean=0.0, sigma=0.4, size=config.n_items)
    price = np.maximum(np.round(price, 2), 0.99)
    return pd.DataFrame(
        {
            "item_id": np.arange(config.n_items, dtype=np.int64),
            "category_id": category,
            "price": price.astype(np.float64),
        }
    )


def build_shop(config: ShopConfig | None = None) -> Shop:
    """Generate users, items and latent traits deterministically from config.seed."""
    config = config or ShopConfig()
    items = _build_items(config)
    rng = np.random.default_rng([config.seed, STREAM_USERS])
    n = config.n_users

    region_idx = rng.integers(0, len(REGIONS), size=n)
    is_mobile = rng.random(n) < 0.6
    consent = rng.random(n) < 0.85
    signup_days = rng.uniform(1.0, 3 * 365.0, size=n)

    # Mild links between CRM attributes and latent traits so the CRM table is informative but not sufficient.
    region_price_shift = np.array([-0.3, 0.4, 0.0, -0.1])[region_idx]
    sens_latent = rng.normal(0.0, 1.1, size=n) + region_price_shift + 0.2 * is_mobile
    price_sensitivity = 1.0 / (1.0 + np.exp(-sens_latent))

    base_logit = rng.normal(BASE_LOGIT_MEAN, BASE_LOGIT_SD, size=n) + 0.1 * (~is_mobile)

    # Lognormal with mean exactly 1 so sessions_per_user_day stays the population mean.
    sigma_activity = 0.7
    activity = rng.lognormal(-0.5 * sigma_activity**2, sigma_activity, size=n)

    # Sparse Dirichlet: most users concentrate on 1-3 categories. The floor keeps log(taste) finite.
    taste = rng.gamma(0.35, 1.0, size=(n, config.n_categories)) + 1e-6
    taste /= taste.sum(axis=1, keepdims=True)

    item_category = items["category_id"].to_numpy(np.int64)
    item_price = items["price"].to_numpy(np.float64)
    basket_value = expected_item_values(price_sensitivity, taste, item_category, item_price, item_price)

    start = pd.Timestamp(config.start).tz_convert("UTC")
    signup_ts = start - pd.to_timedelta(np.round(signup_days * 86_400.0), unit="s")
    users = pd.DataFrame(
        {
            "user_id": np.arange(n, dtype=np.int64),
            "region": np.array(REGIONS, dtype=object)[region_idx],
            "device": np.where(is_mobile, "mobile", "desktop").astype(object),
            "consent_marketing": consent.astype(bool),
            "signup_ts": pd.DatetimeIndex(signup_ts).as_unit("ns"),
        }
    )
    return Shop(
        config=config,
        users=users,
        items=items,
        price_sensitivity=price_sensitivity,
        base_logit=base_logit,
        taste=taste,
        activity=activity,
        basket_value=basket_value,
        basket_reference=float(np.median(basket_value)),
        item_category=item_category,
        item_price=item_price,
        is_mobile=is_mobile,
    )
