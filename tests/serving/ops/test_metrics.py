"""Service metrics are per registry, in process memory (not Feast's multiprocess files)."""

import os
import subprocess
import sys
from pathlib import Path

import feast  # noqa: F401  - imported first on purpose: it sets PROMETHEUS_MULTIPROC_DIR
from prometheus_client import values

from serving.ops.metrics import ServiceMetrics


def test_value_storage_is_in_process_even_after_feast_is_imported():
    assert values.ValueClass is values.MutexValue


def test_value_storage_is_in_process_when_the_variable_is_inherited(tmp_path):
    # A service started by a process that imported Feast (a bench, the demo) inherits PROMETHEUS_MULTIPROC_DIR.
    probe = (
        "import os, serving, feast\n"
        "from prometheus_client import values\n"
        "print(values.ValueClass.__name__, os.environ['PROMETHEUS_MULTIPROC_DIR'])\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=root, capture_output=True, text=True, check=True)
    # in-memory values, and the variable is put back for Feast's own collector
    assert out.stdout.split() == ["MutexValue", str(tmp_path)]


def test_two_services_count_separately_and_total_filters_by_label():
    a, b = ServiceMetrics(), ServiceMetrics()
    for reason in ("safe_mode", "safe_mode", "overloaded"):
        a.fallbacks.labels("home", reason).inc()
    b.fallbacks.labels("home", "safe_mode").inc()
    assert a.total("hyperlift_fallbacks_total") == 3
    assert a.total("hyperlift_fallbacks_total", reason="safe_mode") == 2
    assert a.total("hyperlift_fallbacks_total", reason="safe_mode", surface="cart") == 0
    assert b.total("hyperlift_fallbacks_total") == 1


def test_labelled_children_are_the_metrics_own_series():
    m = ServiceMetrics()
    child = m.labelled(m.fallbacks, "home", "safe_mode")
    assert child is m.labelled(m.fallbacks, "home", "safe_mode") is m.fallbacks.labels("home", "safe_mode")
    child.inc()
    m.fallbacks.labels("home", "safe_mode").inc()
    m.labelled(m.fallbacks, "home", "overloaded").inc(2)
    m.labelled(m.latency, "home", "total").observe(0.002)
    assert m.total("hyperlift_fallbacks_total", reason="safe_mode") == 2
    assert m.total("hyperlift_fallbacks_total", surface="home") == 4
    assert m.total("hyperlift_decision_segment_seconds_count", segment="total") == 1
    # the same label values on another metric are another child
    assert m.labelled(m.decisions, "home") is not m.labelled(m.explored, "home")
