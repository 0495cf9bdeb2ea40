"""The named shops: the default shop is unchanged bit for bit; the late_weibull variant's truth matches its sampler."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd
import pytest

from simulator import ACTION_IDS, Shop, ShopConfig, build_shop, expected_revenue, simulate
from simulator.actions import ACTION_INDEX
from simulator.config import SHOPS, shop_config
from simulator.response import (
    WEIBULL_DELAYS,
    attribution_probabilities,
    attribution_probability,
    delay_cdf,
    sample_delays,
    sample_session_outcomes,
)

from tests.simulator.conftest import SMALL

# Fingerprints of the default small shop taken before the delay models existed (same code path since).
DEFAULT_EVENTS_SHA = "db65fc064095a136"
DEFAULT_SESSIONS_SHA = "8b387cbeec5fb6e4"
# The truth arrays are compared rounded to 1e-9: numpy's exp/log take a SIMD path chosen by the CPU, whose last bits
# differ between machines (the same commit gave other raw hashes on a later machine), while the simulation's draws
# above stay bit for bit.
DEFAULT_TRUTH_SHA = "76da0459362e1ffe"
DEFAULT_TRUTH_24H_SHA = "8039c8efd47d291b"


def _frame_sha(frame: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes()).hexdigest()[:16]


def _array_sha(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()[:16]


def test_default_shop_is_unchanged_bit_for_bit(small_shop: Shop) -> None:
    assert small_shop.config == SMALL and SMALL.delay_model == "exponential"
    sim = simulate(small_shop)
    assert _frame_sha(sim.events) == DEFAULT_EVENTS_SHA
    assert _frame_sha(sim.sessions) == DEFAULT_SESSIONS_SHA
    users = np.arange(small_shop.n_users)
    assert _array_sha(np.round(expected_revenue(small_shop, users), 9)) == DEFAULT_TRUTH_SHA
    assert _array_sha(np.round(expected_revenue(small_shop, users, window_hours=24.0), 9)) == DEFAULT_TRUTH_24H_SHA


def test_named_shops() -> None:
    assert SHOPS["default"] == ShopConfig()
    assert SHOPS["late_weibull"] == ShopConfig(delay_model="weibull_by_action")
    config = shop_config("late_weibull", n_users=300, n_days=2)
    assert (config.n_users, config.n_days, config.delay_model) == (300, 2, "weibull_by_action")
    with pytest.raises(ValueError, match=r"unknown shop 'late'.*'default', 'late_weibull'"):
        shop_config("late")


def test_variant_keeps_the_world_and_changes_only_delays() -> None:
    default = build_shop(ShopConfig(n_users=400, n_days=3, seed=4))
    variant = build_shop(shop_config("late_weibull", n_users=400, n_days=3, seed=4))
    pd.testing.assert_frame_equal(default.users, variant.users)
    users = np.arange(400)
    full = expected_revenue(default, users, window_hours=math.inf)
    np.testing.assert_array_equal(full, expected_revenue(variant, users, window_hours=math.inf))
    a, b = simulate(default).sessions, simulate(variant).sessions
    pd.testing.assert_series_equal(a["converted"], b["converted"])
    pd.testing.assert_series_equal(a["revenue"], b["revenue"])
    assert not a["purchase_delay_hours"].equals(b["purchase_delay_hours"])


def test_variant_truth_uses_each_actions_weibull_cdf() -> None:
    shop = build_shop(shop_config("late_weibull", n_users=300, n_items=60))
    users = np.arange(300)
    full = expected_revenue(shop, users, window_hours=math.inf)
    for window in (6.0, 24.0, 72.0):
        k = np.array([WEIBULL_DELAYS[a][0] for a in ACTION_IDS])
        eta = np.array([WEIBULL_DELAYS[a][1] / math.gamma(1 + 1 / WEIBULL_DELAYS[a][0]) for a in ACTION_IDS])
        cdf = 1 - np.exp(-((window / eta) ** k))
        np.testing.assert_allclose(attribution_probabilities(shop, window), cdf, rtol=1e-12)
        np.testing.assert_allclose(expected_revenue(shop, users, window_hours=window), full * cdf, rtol=1e-12)
    assert attribution_probability(shop, action_id="push_reminder") > 0.99 > attribution_probability(
        shop, action_id="loyalty_points"
    )
    with pytest.raises(ValueError, match="pass action_id"):
        attribution_probability(shop)


def test_default_attribution_is_one_exponential_for_all_actions(small_shop: Shop) -> None:
    np.testing.assert_array_equal(attribution_probabilities(small_shop), np.full(9, 1 - math.exp(-7.2)))
    assert attribution_probability(small_shop) == 1 - math.exp(-7.2)


@pytest.mark.parametrize("action_id", ACTION_IDS)
def test_variant_delays_follow_their_distribution(action_id: str) -> None:
    """Monte Carlo of the sampler: empirical CDF at several times and the mean, per action."""
    config = shop_config("late_weibull")
    rng = np.random.default_rng([23, ACTION_INDEX[action_id]])
    n = 40_000
    delays = sample_delays(config, rng, np.full(n, ACTION_INDEX[action_id]))
    for t in (1.0, 6.0, 24.0, 72.0):
        f = delay_cdf(config, t)[ACTION_INDEX[action_id]]
        assert abs((delays < t).mean() - f) < 4.5 * math.sqrt(f * (1 - f) / n) + 1e-9
    shape, mean = WEIBULL_DELAYS[action_id]
    assert delays.mean() == pytest.approx(mean, rel=4.5 * math.sqrt(math.gamma(1 + 2 / shape)
                                                            / math.gamma(1 + 1 / shape) ** 2 - 1) / math.sqrt(n))


def test_variant_revenue_within_window_matches_sampled_sessions() -> None:
    """Monte Carlo of the session sampler: revenue within 24 h and 72 h per exposure vs the closed form."""
    shop = build_shop(shop_config("late_weibull", n_users=2_000, n_items=120, seed=21))
    users = np.tile(np.arange(shop.n_users), 40)
    for action_id in ("no_action", "pct20_sitewide", "push_reminder", "loyalty_points"):
        rng = np.random.default_rng([29, ACTION_INDEX[action_id]])
        out = sample_session_outcomes(shop, rng, users, np.full(len(users), ACTION_INDEX[action_id]))
        for window in (24.0, 72.0):
            realised = np.where(out.converted & (out.delay_hours < window), out.revenue, 0.0)
            truth = expected_revenue(shop, np.arange(shop.n_users), window_hours=window)[:, ACTION_INDEX[action_id]]
            se = realised.std() / math.sqrt(len(users))
            assert abs(realised.mean() - truth.mean()) < 4.5 * se + 0.005, (action_id, window)


def test_variant_event_stream_matches_its_ground_truth() -> None:
    """Through the event generator: attributed revenue per exposure (24 h window) vs expected_revenue, per action."""
    shop = build_shop(shop_config("late_weibull", n_users=6_000, n_days=14, seed=5, corrupt_rate=0.0))
    events = simulate(shop).events
    window = pd.Timedelta(hours=24)
    exposures = events.loc[events["event_type"] == "promo_exposure", ["session_id", "ts", "user_id", "action_id"]]
    exposures = exposures[exposures["ts"] < pd.Timestamp(shop.config.end) - window]
    purchases = events.loc[events["event_type"] == "purchase", ["session_id", "ts", "revenue"]]
    merged = exposures.merge(purchases.rename(columns={"ts": "purchase_ts"}), on="session_id", how="left")
    merged["attributed"] = np.where(merged["purchase_ts"] - merged["ts"] < window, merged["revenue"].fillna(0.0), 0.0)
    truth = expected_revenue(shop, merged["user_id"].to_numpy(np.int64), window_hours=24.0)
    merged["expected"] = truth[np.arange(len(merged)), [ACTION_INDEX[a] for a in merged["action_id"]]]
    g = merged.groupby("action_id").agg(
        n=("attributed", "size"), emp=("attributed", "mean"), sd=("attributed", "std"), exp=("expected", "mean")
    )
    z = (g["emp"] - g["exp"]) / (g["sd"] / np.sqrt(g["n"]))
    assert (z.abs() < 4.5).all(), z.to_dict()
    # the exponential truth would be visibly wrong here: discounts (k = 2, mean 20 h) land far fewer within 24 h
    discounts = merged[merged["action_id"].isin(["pct10_sitewide", "pct20_sitewide", "cat1_pct15", "cat3_pct15"])]
    exp_truth = expected_revenue(build_shop(ShopConfig(n_users=6_000, seed=5)), discounts["user_id"].to_numpy(np.int64),
                                 window_hours=24.0)
    exp_mean = exp_truth[np.arange(len(discounts)), [ACTION_INDEX[a] for a in discounts["action_id"]]].mean()
    se = discounts["attributed"].std() / math.sqrt(len(discounts))
    assert exp_mean - discounts["attributed"].mean() > 4.5 * se
