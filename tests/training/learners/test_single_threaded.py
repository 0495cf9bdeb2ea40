"""Serving turns every XGBoost model of a learner to one prediction thread, without changing predictions."""

import json

import numpy as np
import pandas as pd
import pytest

from training.learners import LEARNERS
from training.learners.base import single_threaded


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_every_booster_predicts_on_one_thread_with_identical_output(name):
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.random((600, 3)), columns=["a", "b", "c"])
    treatment = np.array(["no_action", "p", "q"])[np.arange(600) % 3]
    y = X["a"].to_numpy() * (treatment == "p") + rng.random(600)
    learner = LEARNERS[name](n_estimators=10, min_rows_per_arm=10).fit(X, treatment, y, propensity=np.full(600, 1 / 3))
    before = learner.predict_uplift(X.to_numpy(np.float32))
    changed = single_threaded(learner)
    assert changed >= 1
    boosters = []
    stack = list(vars(learner).values())
    while stack:
        item = stack.pop()
        if hasattr(item, "get_booster"):
            boosters.append(item.get_booster())
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    assert len(boosters) == changed
    assert {json.loads(b.save_config())["learner"]["generic_param"]["nthread"] for b in boosters} == {"1"}
    np.testing.assert_array_equal(learner.predict_uplift(X.to_numpy(np.float32)), before)
