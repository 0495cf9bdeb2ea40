"""Champion.net_uplift (serving/decision/service.py): μ and s per candidate action, looked up once per candidate list."""

from types import SimpleNamespace

import numpy as np
import pytest

from serving.decision.service import Champion


@pytest.fixture
def champion() -> Champion:
    model = SimpleNamespace(  # the UpliftModel attributes net_uplift reads
        treatments=["push", "pct10", "free_ship"], control="none",
        action_costs={"push": 0.5, "pct10": 2.0, "none": 9.0}, uplift_se={"pct10": 0.25},
    )
    return Champion(model=model, ref=None, features=None, freshness=(), score=lambda rows: rows)


def test_mu_is_uplift_minus_cost_zero_for_the_control_and_unscored_actions(champion):
    uplift = np.array([1.0, 3.0, -0.5], np.float32)  # push, pct10, free_ship
    mu, se = champion.net_uplift(["none", "free_ship", "pct10", "push", "unknown"], uplift)
    np.testing.assert_array_equal(mu, [0.0, -0.5, 1.0, 0.5, 0.0])
    np.testing.assert_array_equal(se, [0.0, 0.0, 0.25, 0.0, 0.0])


def test_the_lookups_are_kept_per_list_and_cannot_be_changed_by_a_caller(champion):
    first, se = champion.net_uplift(["pct10", "push"], np.array([1.0, 3.0, 0.0]))
    second, _ = champion.net_uplift(["pct10", "push"], np.array([2.0, 5.0, 0.0]))
    np.testing.assert_array_equal(first, [1.0, 0.5])
    np.testing.assert_array_equal(second, [3.0, 1.5])
    assert len(champion._lookups) == 1
    first[0] = 99.0  # μ is the caller's own array
    with pytest.raises(ValueError, match="read-only"):
        se[0] = 1.0
    np.testing.assert_array_equal(champion.net_uplift(["pct10", "push"], np.array([1.0, 3.0, 0.0]))[0], [1.0, 0.5])
