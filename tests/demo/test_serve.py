"""`make serve`'s wiring (demo.serve): which clock it starts on, and what it says without the demo's state."""

from __future__ import annotations

import os
import subprocess
import sys

from demo.serve import NOW_VARIABLE, demo_clock, missing_state, shared_metrics
from infra.settings import HyperliftSettings


def _settings(tmp_path) -> HyperliftSettings:
    return HyperliftSettings(home=tmp_path / "home", reports_dir=tmp_path / "reports")


def test_the_demo_clock_file_sets_the_start(tmp_path):
    settings = _settings(tmp_path)
    settings.home.mkdir()
    settings.demo_clock_path.write_text("2026-10-31T00:00:00+00:00\n")
    instant, said = demo_clock(settings, {})
    assert instant == "2026-10-31T00:00:00+00:00"
    assert str(settings.demo_clock_path) in said and NOW_VARIABLE in said


def test_an_explicit_now_wins_over_the_demo_clock(tmp_path):
    settings = _settings(tmp_path)
    settings.home.mkdir()
    settings.demo_clock_path.write_text("2026-10-31T00:00:00+00:00\n")
    instant, said = demo_clock(settings, {NOW_VARIABLE: "2026-11-02T06:00:00Z"})
    assert instant == "2026-11-02T06:00:00Z"
    assert said == f"simulated clock from {NOW_VARIABLE}: 2026-11-02T06:00:00Z"


def test_without_a_demo_clock_the_service_runs_on_the_wall_clock(tmp_path):
    settings = _settings(tmp_path)
    assert demo_clock(settings, {NOW_VARIABLE: ""}) == (None, "wall clock (no demo clock under HYPERLIFT_HOME)")


def test_a_home_without_the_demo_state_says_to_run_the_demo(tmp_path):
    settings = _settings(tmp_path)
    problem = missing_state(settings)
    assert problem is not None and "Run `make demo` first" in problem and str(settings.home) in problem
    settings.feast_registry_path.parent.mkdir(parents=True)
    settings.feast_registry_path.write_bytes(b"")
    assert missing_state(settings) is None


def test_the_entry_point_stops_with_the_instruction_and_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "demo.serve", "--port", "1"],
        env={"HYPERLIFT_HOME": str(tmp_path / "empty"), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "Run `make demo` first" in result.stderr and "Traceback" not in result.stderr


def test_several_workers_share_one_metrics_folder_emptied_of_an_earlier_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERLIFT_SERVING_METRICS_DIR", "")  # recorded: the variable goes back as it was after the test
    monkeypatch.delenv("HYPERLIFT_SERVING_METRICS_DIR")
    settings = _settings(tmp_path)
    folder = settings.home / "serving" / "metrics"
    folder.mkdir(parents=True)
    (folder / "4242.prom").write_text("hyperlift_decisions_total 9\n")
    shared_metrics(settings, 2)
    assert os.environ["HYPERLIFT_SERVING_METRICS_DIR"] == str(folder)
    assert list(folder.iterdir()) == []


def test_workers_below_one_are_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "demo.serve", "--workers", "0"],
        env={"HYPERLIFT_HOME": str(tmp_path / "empty"), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and "--workers must be 1 or more; got 0" in result.stderr
