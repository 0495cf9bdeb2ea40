"""Service metrics are per registry, in process memory (not Feast's multiprocess files)."""

import feast  # noqa: F401  - imported first on purpose: it sets PROMETHEUS_MULTIPROC_DIR
from prometheus_client import values

from serving.metrics import ServiceMetrics


def test_value_storage_is_in_process_even_after_feast_is_imported():
    assert values.ValueClass is values.MutexValue


def test_two_services_count_separately_and_total_filters_by_label():
    a, b = ServiceMetrics(), ServiceMetrics()
    for reason in ("safe_mode", "safe_mode", "overloaded"):
        a.fallbacks.labels("home", reason).inc()
    b.fallbacks.labels("home", "safe_mode").inc()
    assert a.total("hyperlift_fallbacks_total") == 3
    assert a.total("hyperlift_fallbacks_total", reason="safe_mode") == 2
    assert a.total("hyperlift_fallbacks_total", reason="safe_mode", surface="cart") == 0
    assert b.total("hyperlift_fallbacks_total") == 1
