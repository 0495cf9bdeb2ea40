import pytest

from dagster_project.assets.models import UpliftModelConfig
from training.learners import DRLearner, SLearner, TLearner, XLearner


@pytest.mark.parametrize(
    ("name", "cls"), [("t_learner", TLearner), ("s_learner", SLearner), ("x_learner", XLearner), ("dr_learner", DRLearner)]
)
def test_config_builds_the_named_learner_with_overrides(name, cls):
    learner = UpliftModelConfig(learner_name=name, max_depth=3, seed=9).learner()
    assert type(learner) is cls
    assert learner.get_params()["max_depth"] == 3 and learner.get_params()["random_state"] == 9
    assert learner.get_params()["n_estimators"] == cls().get_params()["n_estimators"]  # unset → learner default


def test_unknown_learner_name_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"learner_name 'c_learner' is not one of \['dr_learner', 's_learner'"):
        UpliftModelConfig(learner_name="c_learner").learner()
