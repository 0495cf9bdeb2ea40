"""The sequential test: looks every `step` decisions, the Bonferroni level, the effect-size gate."""

import numpy as np
import pytest

from training.guards.config import GuardConfig, load_guard_config
from training.guards.drift import Reference
from training.guards.monitor import DriftMonitor

CONFIG = GuardConfig(window=400, step=200, min_window=200, horizon=2000, false_alarm_rate=0.05)


def reference(rng: np.random.Generator) -> Reference:
    return Reference.fit({"x": rng.normal(0, 1, 5000), "y": rng.normal(0, 1, 5000)})


def test_the_level_of_each_test_splits_the_rate_over_columns_and_looks():
    monitor = DriftMonitor(reference(np.random.default_rng(0)), CONFIG)
    assert monitor.tests_per_look == 3  # x, y and calibration
    assert monitor.alpha == pytest.approx(0.05 / (3 * 10))


def test_looks_happen_every_step_once_the_window_is_long_enough():
    rng = np.random.default_rng(1)
    monitor = DriftMonitor(reference(rng), CONFIG.model_copy(update={"min_window": 400}))
    seen = []
    for n in (150, 150, 300, 250):
        seen += [look.seen for look in monitor.observe({"x": rng.normal(0, 1, n), "y": rng.normal(0, 1, n)})]
    assert seen == [400, 600, 800]  # 200 was too short; 850 is between looks
    assert monitor.seen == 850 and len(monitor._buffer["x"]) == 400


def test_a_shift_alarms_on_its_column_only():
    rng = np.random.default_rng(2)
    monitor = DriftMonitor(reference(rng), CONFIG)
    looks = monitor.observe({"x": rng.normal(0.8, 1, 400), "y": rng.normal(0, 1, 400)})
    assert looks[-1].alarms == ("x",)
    row = next(r for r in looks[-1].table() if r["column"] == "x")
    assert row["alarm"] and row["psi"] > 0.3 and row["p_value"] < monitor.alpha


def test_a_significant_but_tiny_shift_stays_quiet():
    rng = np.random.default_rng(3)
    strict = CONFIG.model_copy(update={"window": 200_000, "step": 200_000, "min_window": 1, "psi_min": 0.1,
                                       "js_min": 0.1})
    monitor = DriftMonitor(reference(rng), strict)
    look = monitor.observe({"x": rng.normal(0.1, 1, 200_000), "y": rng.normal(0, 1, 200_000)})[0]
    x = next(c for c in look.comparisons if c.name == "x")
    assert x.p_value < 1e-6 < monitor.alpha and x.psi < 0.1 and look.alarms == ()  # significant, too small


def test_missing_columns_count_as_missing_values():
    rng = np.random.default_rng(4)
    monitor = DriftMonitor(reference(rng), CONFIG)
    look = monitor.observe({"x": rng.normal(0, 1, 400)})[-1]
    assert look.alarms == ("y",)  # y went missing: all its mass in the missing bin


def test_the_shipped_configuration_loads(tmp_path):
    config = load_guard_config()
    assert config.looks == config.horizon // config.step and 0 < config.cautious.neutral_share < 1
    bad = tmp_path / "guards.yaml"
    bad.write_text("window: 500\nwindwo: 3\n")
    with pytest.raises(ValueError, match="guards.yaml"):
        load_guard_config(bad)
