"""Multi-action uplift learners on XGBoost base models."""

from training.learners.ate import aipw_pseudo_outcomes, estimate_ate
from training.learners.base import MultiArmUpliftLearner
from training.learners.dr_learner import DRLearner
from training.learners.linear import LinearBase
from training.learners.r_learner import RLearner
from training.learners.s_learner import SLearner
from training.learners.t_learner import TLearner
from training.learners.two_part import TwoPartLearner
from training.learners.x_learner import XLearner

LEARNERS: dict[str, type[MultiArmUpliftLearner]] = {
    "s_learner": SLearner,
    "t_learner": TLearner,
    "x_learner": XLearner,
    "dr_learner": DRLearner,
    "r_learner": RLearner,
}
"""Learner classes by the name configs and run tags use."""

__all__ = [
    "DRLearner",
    "LEARNERS",
    "LinearBase",
    "MultiArmUpliftLearner",
    "RLearner",
    "SLearner",
    "TLearner",
    "TwoPartLearner",
    "XLearner",
    "aipw_pseudo_outcomes",
    "estimate_ate",
]
