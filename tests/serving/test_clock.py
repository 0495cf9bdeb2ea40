"""The service's clock: the wall clock in UTC, or the instant HYPERLIFT_SERVING_NOW fixes."""

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from serving.clock import Clock
from serving.config import ClockSettings, ServingSettings


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
