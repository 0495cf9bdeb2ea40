from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simulator import Shop, ShopConfig, build_shop
from simulator.world import DEVICES, REGIONS


def test_same_seed_gives_identical_world(small_shop: Shop) -> None:
    again = build_shop(small_shop.config)
    pd.testing.assert_frame_equal(small_shop.users, again.users)
    pd.testing.assert_frame_equal(small_shop.items, again.items)
    for name in ("price_sensitivity", "base_logit", "taste", "activity", "basket_value"):
        np.testing.assert_array_equal(getattr(small_shop, name), getattr(again, name))


def test_different_seed_gives_different_world(small_shop: Shop) -> None:
    other = build_shop(ShopConfig(n_users=500, n_days=5, seed=12))
    assert not small_shop.users.equals(other.users)
    assert not small_shop.items.equals(other.items)
    assert not np.array_equal(small_shop.base_logit, other.base_logit)


def test_catalogue_does_not_depend_on_number_of_users() -> None:
    a = build_shop(ShopConfig(n_users=50, seed=3))
    b = build_shop(ShopConfig(n_users=80, seed=3))
    pd.testing.assert_frame_equal(a.items, b.items)


def test_users_table_columns_and_values(small_shop: Shop) -> None:
    users = small_shop.users
    assert list(users.columns) == ["user_id", "region", "device", "consent_marketing", "signup_ts"]
    assert users["user_id"].dtype == np.int64
    assert users["consent_marketing"].dtype == bool
    assert str(users["signup_ts"].dtype) == "datetime64[ns, UTC]"
    np.testing.assert_array_equal(users["user_id"], np.arange(small_shop.config.n_users))
    assert set(users["region"]) == set(REGIONS)
    assert set(users["device"]) == set(DEVICES)
    assert (users["signup_ts"] < pd.Timestamp(small_shop.config.start)).all()


def test_consent_share_is_about_85_percent() -> None:
    shop = build_shop(ShopConfig(n_users=20_000, n_items=50))
    assert shop.users["consent_marketing"].mean() == pytest.approx(0.85, abs=0.015)


def test_items_table_columns_and_price_levels(small_shop: Shop) -> None:
    items = small_shop.items
    config = small_shop.config
    assert list(items.columns) == ["item_id", "category_id", "price"]
    assert items["item_id"].dtype == np.int64
    assert items["category_id"].dtype == np.int64
    assert items["price"].dtype == np.float64
    np.testing.assert_array_equal(items["item_id"], np.arange(config.n_items))
    assert set(items["category_id"]) == set(range(config.n_categories))
    assert (items["price"] > 0).all()
    medians = items.groupby("category_id")["price"].median()
    assert medians.max() / medians.min() > 4  # categories really differ in price level


def test_latent_arrays_have_the_documented_shapes_and_ranges(small_shop: Shop) -> None:
    n, c = small_shop.config.n_users, small_shop.config.n_categories
    assert small_shop.price_sensitivity.shape == (n,)
    assert ((small_shop.price_sensitivity > 0) & (small_shop.price_sensitivity < 1)).all()
    assert small_shop.base_logit.shape == (n,)
    assert small_shop.taste.shape == (n, c)
    assert (small_shop.taste > 0).all()
    np.testing.assert_allclose(small_shop.taste.sum(axis=1), 1.0)
    assert small_shop.taste.max(axis=1).mean() > 0.45  # peaked: most mass on few categories
    assert small_shop.activity.shape == (n,)
    assert (small_shop.activity > 0).all()
    assert small_shop.basket_value.shape == (n,)
    # basket value is an average of item prices, so it stays inside the price range
    assert small_shop.basket_value.min() >= small_shop.item_price.min()
    assert small_shop.basket_value.max() <= small_shop.item_price.max()


def test_activity_has_mean_one_so_the_session_rate_is_the_population_mean() -> None:
    shop = build_shop(ShopConfig(n_users=20_000, n_items=50))
    assert shop.activity.mean() == pytest.approx(1.0, abs=0.03)


def test_price_sensitive_users_buy_cheaper_baskets() -> None:
    shop = build_shop(ShopConfig(n_users=5_000, n_items=200))
    high = shop.price_sensitivity > np.quantile(shop.price_sensitivity, 0.8)
    low = shop.price_sensitivity < np.quantile(shop.price_sensitivity, 0.2)
    assert np.median(shop.basket_value[high]) < 0.7 * np.median(shop.basket_value[low])
