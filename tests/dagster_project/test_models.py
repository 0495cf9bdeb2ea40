import pytest

from dagster_project.assets.models import UpliftModelConfig
from training.learners import DRLearner, SLearner, TLearner, TwoPartLearner, XLearner
from training.learners.selection import CausalModelSelector


@pytest.mark.parametrize(
    ("name", "cls"), [("t_learner", TLearner), ("s_learner", SLearner), ("x_learner", XLearner), ("dr_learner", DRLearner)]
)
def test_config_builds_the_named_learner_with_overrides(name, cls):
    learner = UpliftModelConfig(learner_name=name, max_depth=3, seed=9).learner()
    assert type(learner) is cls
    assert learner.get_params()["max_depth"] == 3 and learner.get_params()["random_state"] == 9
    assert learner.get_params()["n_estimators"] == cls().get_params()["n_estimators"]  # unset → learner default


def test_the_default_is_the_two_part_learner_with_the_shrunk_recalibration():
    config = UpliftModelConfig(max_depth=3, seed=9)
    learner = config.learner()
    assert type(learner) is TwoPartLearner and config.recalibration == "shrunk"
    assert learner.get_params()["max_depth"] == 3 and learner.get_params()["random_state"] == 9


def test_unknown_learner_name_is_refused_with_the_choices():
    choices = r"\['dr_learner', 'r_learner', 's_learner', 'selected', 't_learner', 'two_part', 'x_learner'\]"
    with pytest.raises(ValueError, match=r"learner_name 'c_learner' is not one of " + choices):
        UpliftModelConfig(learner_name="c_learner").learner()


def test_selected_builds_a_selector_whose_candidates_carry_the_overrides():
    selector = UpliftModelConfig(learner_name="selected", max_depth=3, seed=9).learner()
    assert isinstance(selector, CausalModelSelector) and selector.random_state == 9
    assert sorted(selector.candidates) == sorted(f"{m}_{b}" for m in ("s", "t", "x", "r", "dr") for b in ("xgboost", "linear"))
    assert {c.max_depth for c in selector.candidates.values()} == {3}
    assert {c.random_state for c in selector.candidates.values()} == {9}
