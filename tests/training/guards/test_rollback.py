"""The rollback rule: recent promotion, enough matured outcomes, value below the previous champion's interval."""

import numpy as np
import pytest

from training.guards.config import RollbackConfig
from training.guards.rollback import ValueInterval, verdict

RULE = RollbackConfig(recent_s=3600, min_outcomes=100, z=1.96)
rng = np.random.default_rng(0)
BEFORE = rng.normal(2.0, 1.0, 1000)


def test_the_interval_is_mean_plus_minus_z_standard_errors():
    interval = ValueInterval.of(np.array([1.0, 2.0, 3.0, 4.0]), 2.0)
    half = 2.0 * np.std([1, 2, 3, 4], ddof=1) / 2.0
    assert (interval.mean, interval.low, interval.high) == (2.5, pytest.approx(2.5 - half), pytest.approx(2.5 + half))


def test_a_recent_champion_below_the_previous_interval_is_rolled_back():
    found = verdict(rng.normal(1.5, 1.0, 200), BEFORE, promoted_at=1000.0, now=1000.0 + 600, config=RULE)
    assert found.roll_back and "below the previous champion's interval" in found.reason


@pytest.mark.parametrize("current, promoted_at, why", [
    (rng.normal(1.5, 1.0, 200), 0.0, "more than recent_s"),  # promoted 1000 s + 3600 ago: not recent
    (rng.normal(1.5, 1.0, 50), 1000.0, "too few matured decisions"),
    (rng.normal(2.0, 1.0, 400), 1000.0, "within or above"),
    (rng.normal(1.5, 1.0, 200), None, "no promotion"),
])
def test_otherwise_the_champion_stays(current, promoted_at, why):
    found = verdict(current, BEFORE, promoted_at=promoted_at, now=4601.0 if promoted_at == 0.0 else 1600.0,
                    config=RULE)
    assert not found.roll_back and why in found.reason
