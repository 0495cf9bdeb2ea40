"""Exactly-once, event-time features across arrival partitions: shuffled, duplicated and late input all give the
snapshots computed once over the events that arrived inside the watermark."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_repo.contracts import validate_events
from feature_repo.event_time import DAY, Lateness, partition_snapshots, validate_arrivals
from feature_repo.transforms import event_tiles, merge_tiles, snapshots_from_tiles
from tests.feature_repo.factories import START, event, frame

N_DAYS = 5
USERS = np.array([1, 2, 3])


def replay(partitions: dict[pd.Timestamp, pd.DataFrame], lateness: Lateness) -> tuple[pd.DataFrame, dict[str, int]]:
    """Run arrival partitions in day order, as the Dagster assets do; returns the snapshot files in the end (one
    per stamp, later writes replacing earlier ones) and the quarantine counts by rule."""
    seen = pd.Index([], dtype="string")
    tiles = merge_tiles()
    files: dict[pd.Timestamp, pd.DataFrame] = {}
    rules: dict[str, int] = {}
    for day in sorted(partitions):
        result = validate_arrivals(partitions[day], day, lateness, seen)
        assert result.n_in == len(partitions[day])  # rows in = accepted + quarantined, per partition
        for rule, n in result.rule_counts.items():
            rules[rule] = rules.get(rule, 0) + n
        seen = seen.append(pd.Index(result.accepted["event_id"], dtype="string"))
        tiles = merge_tiles(tiles, event_tiles(result.accepted))
        files.update(partition_snapshots(tiles, USERS, day, lateness))
    written = pd.concat([files[s] for s in sorted(files) if START < s <= START + N_DAYS * DAY], ignore_index=True)
    return written, rules


def one_shot(events: pd.DataFrame) -> pd.DataFrame:
    stamps = pd.date_range(START + DAY, periods=N_DAYS, freq="D")
    return snapshots_from_tiles(event_tiles(validate_events(frame(events), START + 10 * DAY).accepted), USERS, stamps)


kinds = st.sampled_from(["page_view", "purchase", "promo_exposure"])
shop_event = st.fixed_dictionaries(
    {
        "kind": kinds,
        "user": st.sampled_from(USERS.tolist()),
        "minute": st.integers(0, N_DAYS * 24 * 60 - 1),
        "price": st.integers(1, 50_000).map(lambda c: c / 100),  # cents: realistic prices, float sums inexact
        "category": st.integers(0, 7),
        "mobile": st.booleans(),
        "lag": st.integers(0, 4),  # arrival day − event day
        "copies": st.integers(1, 3),  # a retry arrives again, the same or a later day
    }
)


def raw_event(i: int, e: dict) -> dict:
    fields = dict(event_id=f"e{i}", event_type=e["kind"], ts=START + pd.Timedelta(minutes=e["minute"]),
                  user_id=e["user"], category_id=e["category"], price=e["price"],
                  device="mobile" if e["mobile"] else "desktop")
    if e["kind"] == "purchase":
        fields["revenue"] = round(e["price"] * 0.9, 2)
    if e["kind"] == "promo_exposure":
        fields.update(item_id=None, category_id=None, price=None, action_id="free_shipping", propensity=0.25,
                      surface="home")
    return event(**fields)


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(shop_event, min_size=1, max_size=40), st.integers(0, 3), st.randoms(use_true_random=False))
def test_any_arrival_order_duplicates_and_lateness_give_the_one_shot_snapshots(events, allowed, rnd):
    lateness = Lateness(allowed)
    rows = [raw_event(i, e) for i, e in enumerate(events)]
    # Every day of the period is a partition, also the days nothing arrived on.
    partitions: dict[pd.Timestamp, list[dict]] = {START + d * DAY: [] for d in range(N_DAYS)}
    on_time = []
    for row, e in zip(rows, events):
        day = row["ts"].floor("D")
        if e["lag"] <= allowed:
            on_time.append(row)
        for copy in range(e["copies"]):
            partitions.setdefault(day + (e["lag"] + copy) * DAY, []).append(dict(row))
    for batch in partitions.values():
        rnd.shuffle(batch)
    written, rules = replay({d: frame(b) for d, b in partitions.items()}, lateness)

    expected = one_shot(on_time).sort_values(["event_timestamp", "user_id"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(written, expected, check_exact=True)
    # Every copy that was not accepted is accounted for, by rule.
    assert sum(rules.values()) == sum(e["copies"] for e in events) - len(on_time)
    assert rules.get("ts.beyond_watermark", 0) == sum(
        sum(1 for c in range(e["copies"]) if e["lag"] + c > allowed) for e in events
    )


def test_a_late_event_revises_the_snapshots_after_its_day_only():
    lateness = Lateness(2)
    on_day_0 = event(event_id="a", ts=START + pd.Timedelta(hours=3), user_id=1)
    late = event(event_id="b", ts=START + pd.Timedelta(hours=5), user_id=2)  # day 0, arrives on day 2
    before, _ = replay({START: frame([on_day_0]), START + DAY: frame([])}, lateness)
    after, rules = replay({START: frame([on_day_0]), START + DAY: frame([]), START + 2 * DAY: frame([late])}, lateness)
    assert rules == {}
    before, after = (f.set_index(["user_id", "event_timestamp"]) for f in (before, after))
    changed = (before != after.loc[before.index]).any(axis=1)
    assert changed[changed].index.tolist() == [(2, START + DAY), (2, START + 2 * DAY)]
    assert after.loc[(2, START + DAY), "page_views_total"] == 1.0
    assert after.loc[(2, START + DAY), "days_since_last_visit"] == pytest.approx(19 / 24)
    assert after.loc[(2, START + 3 * DAY), "page_views_total"] == 1.0


def test_an_event_behind_the_watermark_is_quarantined_with_the_rule():
    lateness = Lateness(1)
    result = validate_arrivals(frame([event(event_id="old", ts=START + pd.Timedelta(hours=23))]), START + 2 * DAY,
                               lateness, pd.Index([], dtype="string"))
    assert result.accepted.empty
    assert result.quarantined[["event_id", "rule"]].to_numpy().tolist() == [["old", "ts.beyond_watermark"]]
    assert "earlier than the watermark 2026-10-02T00:00:00+00:00" in result.quarantined.loc[0, "reason"]


def test_a_replayed_event_id_is_quarantined_even_in_a_later_partition():
    seen = pd.Index(["e1"], dtype="string")
    result = validate_arrivals(frame([event(event_id="e1"), event(event_id="e2")]), START, Lateness(0), seen)
    assert result.accepted["event_id"].tolist() == ["e2"]
    assert result.quarantined[["event_id", "rule", "reason"]].to_numpy().tolist() == [
        ["e1", "event_id.unique", "duplicate of an event accepted earlier"]
    ]


def test_tiles_merge_exactly_in_any_grouping():
    rows = [raw_event(i, {"kind": k, "user": 1 + i % 3, "minute": 37 * i, "price": 0.1 * (i + 1), "category": i % 8,
                          "mobile": i % 2 == 0, "lag": 0, "copies": 1})
            for i, k in enumerate(["page_view", "purchase", "promo_exposure"] * 7)]
    events = validate_events(frame(rows), START + 10 * DAY).accepted
    whole = event_tiles(events)
    parts = merge_tiles(*(event_tiles(events.iloc[i::4]) for i in (3, 1, 0, 2)))
    pd.testing.assert_frame_equal(whole, parts, check_exact=True)
    assert whole["revenue_micros"].sum() == sum(round(round(0.1 * (i + 1) * 0.9, 2) * 1e6) for i in range(1, 21, 3))


@pytest.mark.parametrize("bad", [-1, 1.5, "2"])
def test_lateness_must_be_whole_days(bad):
    with pytest.raises(ValueError, match="allowed lateness must be a whole number of days >= 0"):
        Lateness(bad)
