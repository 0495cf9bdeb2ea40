import numpy as np
import pytest

from serving.store.feature_cache import LastKnownGood
from serving.store.features import FeatureRead


def read(value: float) -> FeatureRead:
    return FeatureRead(values=np.array([value], np.float32), found=True, by_name={"f": value}, event_timestamps={})


def test_remembers_until_max_age_then_forgets():
    now = [0.0]
    cache = LastKnownGood(max_entries=10, max_age_s=60, clock=lambda: now[0])
    cache.put(("1", 7), read(1.0))
    now[0] = 60.0
    assert cache.get(("1", 7)).by_name == {"f": 1.0}
    now[0] = 60.1
    assert cache.get(("1", 7)) is None and len(cache) == 0


def test_least_recently_used_is_evicted_first():
    cache = LastKnownGood(max_entries=2, max_age_s=60, clock=lambda: 0.0)
    cache.put("a", read(1.0))
    cache.put("b", read(2.0))
    assert cache.get("a") is not None  # "a" is now the most recently used
    cache.put("c", read(3.0))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_entries must be >= 1"):
        LastKnownGood(max_entries=0)
