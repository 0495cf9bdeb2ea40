from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from simulator import ACTION_IDS, CORRUPTION_KINDS, Shop, ShopConfig, Simulation, build_shop, simulate
from simulator import expected_revenue, simulate_events
from simulator.actions import ACTION_INDEX, discount_multipliers
from simulator.logging_policy import logging_probabilities

EXPECTED_DTYPES = {
    "event_id": "object",
    "event_type": "object",
    "event_version": "int64",
    "ts": "datetime64[ns, UTC]",
    "user_id": "Int64",
    "session_id": "object",
    "item_id": "Int64",
    "category_id": "Int64",
    "price": "float64",
    "revenue": "float64",
    "action_id": "object",
    "propensity": "float64",
    "surface": "object",
    "device": "object",
    "region": "object",
}


def _dtypes(frame: pd.DataFrame) -> dict[str, str]:
    return {name: str(dtype) for name, dtype in frame.dtypes.items()}


def test_columns_and_dtypes_are_exact(small_sim: Simulation) -> None:
    for frame in (small_sim.events, small_sim.clean_events):
        assert list(frame.columns) == list(EXPECTED_DTYPES)
        assert _dtypes(frame) == EXPECTED_DTYPES
        assert isinstance(frame.index, pd.RangeIndex)


def test_same_seed_gives_identical_frames(small_shop: Shop, small_sim: Simulation) -> None:
    again = simulate(build_shop(small_shop.config))
    pd.testing.assert_frame_equal(small_sim.events, again.events)
    pd.testing.assert_frame_equal(small_sim.clean_events, again.clean_events)
    pd.testing.assert_frame_equal(small_sim.sessions, again.sessions)
    pd.testing.assert_frame_equal(small_sim.corrupted_rows, again.corrupted_rows)
    assert small_sim.corruption_counts == again.corruption_counts
    pd.testing.assert_frame_equal(simulate_events(small_shop), small_sim.events)


def test_different_seed_gives_different_frames(small_sim: Simulation) -> None:
    other = simulate_events(build_shop(ShopConfig(n_users=500, n_days=5, seed=12)))
    assert not other.equals(small_sim.events)
    assert not other["ts"].equals(small_sim.events["ts"])


def test_streams_are_sorted_by_ts(small_sim: Simulation) -> None:
    assert small_sim.events["ts"].is_monotonic_increasing
    assert small_sim.clean_events["ts"].is_monotonic_increasing


def test_clean_stream_is_valid(small_shop: Shop, small_sim: Simulation) -> None:
    ev = small_sim.clean_events
    config = small_shop.config
    assert ev["event_id"].is_unique and ev["event_id"].notna().all()
    assert ev["event_id"].str.fullmatch(r"e\d{9}").all()
    assert set(ev["event_type"]) == {"page_view", "add_to_cart", "purchase", "promo_exposure"}
    assert (ev["event_version"] == 1).all()
    assert ev["user_id"].notna().all()
    assert (ev["ts"] >= pd.Timestamp(config.start)).all() and (ev["ts"] < pd.Timestamp(config.end)).all()
    is_purchase = ev["event_type"] == "purchase"
    is_exposure = ev["event_type"] == "promo_exposure"
    # fields only present where they apply
    assert ev.loc[is_purchase, "revenue"].gt(0).all() and ev.loc[~is_purchase, "revenue"].isna().all()
    assert ev.loc[is_exposure, "propensity"].between(0, 1, inclusive="right").all()
    assert ev.loc[~is_exposure, "propensity"].isna().all()
    assert ev.loc[is_exposure | is_purchase, "action_id"].isin(ACTION_IDS).all()
    assert ev.loc[~(is_exposure | is_purchase), "action_id"].isna().all()
    assert ev.loc[is_exposure, ["item_id", "category_id", "price"]].isna().all().all()
    assert ev.loc[~is_exposure, ["item_id", "category_id", "price"]].notna().all().all()
    assert (ev.loc[is_exposure, "surface"] == "home").all() and ev["surface"].notna().all()
    # denormalised item and user attributes agree with the tables
    items = ev.loc[~is_exposure]
    cat = small_shop.items["category_id"].to_numpy()[items["item_id"].to_numpy(np.int64)]
    np.testing.assert_array_equal(items["category_id"].to_numpy(np.int64), cat)
    price = small_shop.items["price"].to_numpy()[items["item_id"].to_numpy(np.int64)]
    np.testing.assert_array_equal(items["price"].to_numpy(), price)
    users = small_shop.users.set_index("user_id")
    uid = ev["user_id"].to_numpy(np.int64)
    np.testing.assert_array_equal(ev["device"].to_numpy(), users["device"].to_numpy()[uid])
    np.testing.assert_array_equal(ev["region"].to_numpy(), users["region"].to_numpy()[uid])


def test_one_exposure_per_session_then_page_views(small_sim: Simulation) -> None:
    ev = small_sim.clean_events
    exposures = ev[ev["event_type"] == "promo_exposure"]
    assert exposures["session_id"].is_unique
    assert set(ev["session_id"]) == set(exposures["session_id"])
    views = ev[ev["event_type"] == "page_view"].groupby("session_id").size()
    assert views.min() >= 1 and views.max() <= 6
    first = ev.groupby("session_id")["ts"].min()
    np.testing.assert_array_equal(first[exposures["session_id"]].to_numpy(), exposures["ts"].to_numpy())
    assert len(exposures) == len(small_sim.sessions)


def test_purchases_follow_their_exposure_and_carry_its_action(small_shop: Shop, small_sim: Simulation) -> None:
    ev = small_sim.clean_events
    exposures = ev[ev["event_type"] == "promo_exposure"].set_index("session_id")
    purchases = ev[ev["event_type"] == "purchase"]
    assert len(purchases) > 30
    exp = exposures.loc[purchases["session_id"]]
    assert (purchases["ts"].to_numpy() > exp["ts"].to_numpy()).all()
    assert (purchases["ts"] < pd.Timestamp(small_shop.config.end)).all()
    np.testing.assert_array_equal(purchases["action_id"].to_numpy(), exp["action_id"].to_numpy())
    # revenue = list price × (1 − discount where the action covers the item), in cents
    mult = discount_multipliers(small_shop.item_category)
    a = np.array([ACTION_INDEX[x] for x in purchases["action_id"]])
    i = purchases["item_id"].to_numpy(np.int64)
    np.testing.assert_allclose(purchases["revenue"].to_numpy(), np.round(small_shop.item_price[i] * mult[a, i], 2))
    assert purchases["session_id"].is_unique  # at most one purchase per session
    carts = ev[ev["event_type"] == "add_to_cart"]
    assert (carts["ts"].to_numpy() >= exposures.loc[carts["session_id"], "ts"].to_numpy()).all()


def test_purchases_after_the_end_are_not_emitted(small_shop: Shop, small_sim: Simulation) -> None:
    s = small_sim.sessions
    end = pd.Timestamp(small_shop.config.end)
    late = s["converted"] & (s["purchase_ts"] >= end)
    assert late.sum() > 0  # the last day's delayed purchases exist in the ground truth...
    emitted = set(small_sim.clean_events.loc[small_sim.clean_events["event_type"] == "purchase", "session_id"])
    assert emitted == set(s.loc[s["converted"] & (s["purchase_ts"] < end), "session_id"])  # ...but not in the stream


def test_propensities_equal_the_logging_probabilities(small_shop: Shop, small_sim: Simulation) -> None:
    bad_rows = set(small_sim.corrupted_rows["row"])
    for frame, skip in ((small_sim.clean_events, set()), (small_sim.events, bad_rows)):
        exp = frame[(frame["event_type"] == "promo_exposure") & ~frame.index.isin(list(skip))]
        probs = logging_probabilities(small_shop.users.iloc[exp["user_id"].to_numpy(np.int64)])
        a = np.array([ACTION_INDEX[x] for x in exp["action_id"]])
        np.testing.assert_allclose(exp["propensity"].to_numpy(), probs[np.arange(len(exp)), a], rtol=0, atol=1e-15)


def test_non_consented_users_only_get_no_action(small_shop: Shop, small_sim: Simulation) -> None:
    ev = small_sim.clean_events
    no_consent = set(small_shop.users.loc[~small_shop.users["consent_marketing"], "user_id"])
    exp = ev[(ev["event_type"] == "promo_exposure") & ev["user_id"].isin(no_consent)]
    assert len(exp) > 20
    assert (exp["action_id"] == "no_action").all() and (exp["propensity"] == 1.0).all()
    assert (ev.loc[ev["event_type"] == "promo_exposure", "action_id"] != "no_action").sum() > 0


def _detected(events: pd.DataFrame, config: ShopConfig) -> dict[str, int]:
    """What a quarantine would find, one rule per corruption kind."""
    is_exposure = events["event_type"] == "promo_exposure"
    return {
        "null_user_id": int(events["user_id"].isna().sum()),
        "negative_revenue": int((events["revenue"] < 0).sum()),
        "unknown_event_type": int((events["event_type"] == "pageview_v0").sum()),
        "future_ts": int((events["ts"] > pd.Timestamp(config.end) + timedelta(days=1)).sum()),
        "bad_propensity": int((is_exposure & ~events["propensity"].between(0, 1, inclusive="right")).sum()),
        "null_event_id": int(events["event_id"].isna().sum()),
        "duplicate_event_id": int(events.duplicated(keep="first").sum()),
    }


@pytest.mark.parametrize("corrupt_rate", [None, 0.05])
def test_each_corruption_kind_is_present_with_its_exact_count(
    small_shop: Shop, small_sim: Simulation, corrupt_rate: float | None
) -> None:
    if corrupt_rate is None:  # the default rate on the small world: one row of each kind
        sim, config = small_sim, small_shop.config
    else:
        config = ShopConfig(n_users=300, n_days=3, seed=2, corrupt_rate=corrupt_rate)
        sim = simulate(build_shop(config))
    counts = sim.corruption_counts
    assert set(counts) == set(CORRUPTION_KINDS)
    assert all(v >= 1 for v in counts.values())
    assert _detected(sim.events, config) == counts
    assert sum(counts.values()) == max(7, round(config.corrupt_rate * len(sim.clean_events)))
    assert len(sim.events) == len(sim.clean_events) + counts["duplicate_event_id"]
    # corrupted_rows records one row per defect, pointing at the malformed rows
    assert sim.corrupted_rows["kind"].value_counts().to_dict() == counts
    assert sim.corrupted_rows["row"].is_unique
    assert _detected(sim.events.drop(index=sim.corrupted_rows["row"]), config) == dict.fromkeys(counts, 0)


def test_event_ids_unique_except_the_injected_duplicates(small_sim: Simulation) -> None:
    ids = small_sim.events["event_id"].dropna()
    dup = ids[ids.duplicated(keep=False)]
    assert dup.nunique() == small_sim.corruption_counts["duplicate_event_id"]
    assert ids.duplicated().sum() == small_sim.corruption_counts["duplicate_event_id"]
    rows = small_sim.corrupted_rows.loc[small_sim.corrupted_rows["kind"] == "duplicate_event_id", "row"]
    for r in rows:  # exact copy right after the original
        pd.testing.assert_series_equal(
            small_sim.events.iloc[r], small_sim.events.iloc[r - 1], check_names=False
        )


def test_zero_corrupt_rate_leaves_the_stream_clean(medium_sim: Simulation) -> None:
    pd.testing.assert_frame_equal(medium_sim.events, medium_sim.clean_events)
    assert medium_sim.corruption_counts == {k: 0 for k in CORRUPTION_KINDS}
    assert medium_sim.corrupted_rows.empty


def test_logged_revenue_per_action_matches_expected_revenue(medium_shop: Shop, medium_sim: Simulation) -> None:
    """Monte-Carlo through the event stream: revenue within the attribution window per logged exposure."""
    ev = medium_sim.events
    window = pd.Timedelta(hours=medium_shop.config.attribution_window_hours)
    exp = ev.loc[ev["event_type"] == "promo_exposure", ["session_id", "ts", "user_id", "action_id"]]
    exp = exp[exp["ts"] < pd.Timestamp(medium_shop.config.end) - window]  # windows fully observed
    pur = ev.loc[ev["event_type"] == "purchase", ["session_id", "ts", "revenue"]].rename(columns={"ts": "purchase_ts"})
    m = exp.merge(pur, on="session_id", how="left")
    m["attributed"] = np.where(m["purchase_ts"] - m["ts"] <= window, m["revenue"].fillna(0.0), 0.0)
    r = expected_revenue(medium_shop, m["user_id"].to_numpy(np.int64))
    m["expected"] = r[np.arange(len(m)), [ACTION_INDEX[a] for a in m["action_id"]]]
    g = m.groupby("action_id").agg(
        n=("attributed", "size"), emp=("attributed", "mean"), sd=("attributed", "std"), exp=("expected", "mean")
    )
    assert set(g.index) == set(ACTION_IDS) and g["n"].min() > 2000
    z = (g["emp"] - g["exp"]) / (g["sd"] / np.sqrt(g["n"]))
    assert (z.abs() < 4.5).all(), z.to_dict()
    pooled = (m["attributed"].mean() - m["expected"].mean()) / (m["attributed"].std() / math.sqrt(len(m)))
    assert abs(pooled) < 4.0


def test_latent_traits_show_in_behaviour(medium_shop: Shop, medium_sim: Simulation) -> None:
    """The platform cannot see the latent arrays, but the stream must reveal them."""
    ev = medium_sim.events
    page_views = ev[ev["event_type"] == "page_view"]
    views = np.log(page_views["price"]).groupby(page_views["user_id"]).mean()
    sens = pd.Series(medium_shop.price_sensitivity).loc[views.index.to_numpy(np.int64)]
    assert views.corr(pd.Series(sens.to_numpy(), index=views.index), method="spearman") < -0.3
    sessions = ev[ev["event_type"] == "promo_exposure"].groupby("user_id").size()
    sessions = sessions.reindex(range(medium_shop.n_users), fill_value=0)
    assert np.corrcoef(sessions.to_numpy(), medium_shop.activity)[0, 1] > 0.5
