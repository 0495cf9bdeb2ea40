"""Multi-action uplift learners on XGBoost base models."""

from training.learners.base import MultiArmUpliftLearner
from training.learners.t_learner import TLearner

__all__ = ["MultiArmUpliftLearner", "TLearner"]
