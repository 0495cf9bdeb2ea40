"""The service's clock: the wall clock in UTC, or a simulated instant that starts at HYPERLIFT_SERVING_NOW and only moves forward."""

import time
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from serving.core.clock import Clock, ClockError
from serving.core.config import ClockSettings, ServingSettings


def test_the_wall_clock_is_utc_and_moves_with_the_wall():
    before = datetime.now(timezone.utc)
    now = Clock().now()
    assert now.tzinfo is timezone.utc and before <= now <= datetime.now(timezone.utc)


def test_a_fixed_instant_is_returned_in_utc_every_time():
    clock = Clock(datetime(2026, 10, 31, 2, 0, tzinfo=timezone(timedelta(hours=2))))
    assert clock.now() == clock.now() == datetime(2026, 10, 31, 0, 0, tzinfo=timezone.utc)
    assert clock.now().tzinfo is timezone.utc and clock.describe() == "2026-10-31T00:00:00+00:00"


def test_a_naive_instant_is_refused_because_its_zone_is_unknown():
    with pytest.raises(ValueError, match=r"needs a timezone-aware instant \(e.g. 2026-10-31T00:00:00\+00:00\)"):
        Clock(datetime(2026, 10, 31))


def test_the_setting_is_read_from_the_environment_in_iso_8601(monkeypatch):
    monkeypatch.setenv("HYPERLIFT_SERVING_NOW", "2026-10-31T00:00:00Z")
    assert ClockSettings().now == datetime(2026, 10, 31, tzinfo=timezone.utc)
    assert ServingSettings(redis_url="redis://localhost:6379/0").now == datetime(2026, 10, 31, tzinfo=timezone.utc)
    monkeypatch.delenv("HYPERLIFT_SERVING_NOW")
    assert ClockSettings().now is None


@pytest.mark.parametrize("value", ["2026-10-31", "2026-10-31T00:00:00", "end of october"])
def test_a_setting_without_a_zone_or_not_a_date_stops_start_up(monkeypatch, value):
    monkeypatch.setenv("HYPERLIFT_SERVING_NOW", value)
    with pytest.raises(ValidationError, match=r"now\n"):
        ClockSettings()


def test_a_simulated_clock_moves_only_forward_and_its_epoch_follows():
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    clock = Clock(start)
    assert clock.simulated and clock.time() == start.timestamp() == 1793491200.0
    later = clock.advance_to(datetime(2026, 11, 1, 8, 0, tzinfo=timezone(timedelta(hours=2))))
    assert later == clock.now() == datetime(2026, 11, 1, 6, 0, tzinfo=timezone.utc)
    assert clock.time() == 1793491200.0 + 6 * 3600 and clock.describe() == "2026-11-01T06:00:00+00:00"
    assert clock.advance_to(later) == later  # standing still is allowed
    with pytest.raises(ClockError, match=r"only moves forward: it is 2026-11-01T06:00:00\+00:00, asked for "
                                         r"2026-11-01T05:59:59\+00:00"):
        clock.advance_to(later - timedelta(seconds=1))
    assert clock.now() == later


def test_the_wall_clock_cannot_be_moved_and_its_epoch_is_the_wall_time():
    clock = Clock()
    before = time.time()
    assert not clock.simulated and before <= clock.time() <= time.time()
    with pytest.raises(ClockError, match="runs on the wall clock; start it with HYPERLIFT_SERVING_NOW"):
        clock.advance_to(datetime(2030, 1, 1, tzinfo=timezone.utc))


def test_a_naive_instant_cannot_move_the_clock():
    clock = Clock(datetime(2026, 11, 1, tzinfo=timezone.utc))
    with pytest.raises(ClockError, match="timezone-aware"):
        clock.advance_to(datetime(2026, 11, 2))
