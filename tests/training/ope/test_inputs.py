"""Bad OPE inputs raise a ValueError that names the problem (and the rounds), through the estimators' own API."""

import numpy as np
import pytest

from training.ope import DirectMethod, DoublyRobust, InverseProbabilityWeighting
from training.ope.inputs import check_ope_inputs

GOOD = {
    "reward": np.array([1.0, 0.0, 1.0]),
    "action": np.array([0, 1, 1]),
    "pscore": np.array([0.5, 0.5, 0.25]),
    "action_dist": np.array([[0.5, 0.5], [0.2, 0.8], [1.0, 0.0]])[:, :, None],
}


def _with(**changes):
    return {**GOOD, **changes}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"reward": np.array([1.0, 0.0])}, r"`reward` must have one value per round \(3"),
        ({"pscore": np.array([0.5, 0.5, 0.25, 0.1])}, r"`pscore` must have one value per round"),
        ({"action_dist": GOOD["action_dist"][:, :, 0]}, r"`action_dist` must be a 3-D array; got shape \(3, 2\)"),
        ({"pscore": np.array([0.5, 0.0, 0.25])}, r"pscore.*in \(0, 1\]; rounds \[1\]"),
        ({"pscore": np.array([0.5, 1.5, 0.25])}, r"pscore.*in \(0, 1\]; rounds \[1\]"),
        ({"pscore": np.array([0.5, -0.5, 0.25])}, r"pscore.*in \(0, 1\]"),
        ({"reward": np.array([1.0, np.nan, 1.0])}, r"`reward` holds NaN at \[1\]"),
        ({"pscore": np.array([0.5, np.nan, 0.25])}, r"`pscore` holds NaN"),
        ({"reward": np.array([1.0, np.inf, 1.0])}, r"`reward` holds infinite values at \[1\]"),
        ({"action": np.array([0, 2, 1])}, r"`action` must be in \[0, 2\).*rounds \[1\]"),
        ({"action": np.array([0.0, 1.0, 1.0])}, r"`action` must hold integer action indices"),
        ({"action_dist": np.array([[0.5, 0.4], [0.2, 0.8], [1.0, 0.0]])[:, :, None]},
         r"must sum to 1 .*\[round, slot\] \[\(0, 0\)\]"),
        ({"action_dist": np.array([[1.5, -0.5], [0.2, 0.8], [1.0, 0.0]])[:, :, None]}, r"probabilities >= 0"),
        ({"action_dist": np.array([[np.nan, 0.5], [0.2, 0.8], [1.0, 0.0]])[:, :, None]}, r"`action_dist` holds NaN"),
        ({"pscore": None}, r"ipw needs `pscore`"),
    ],
)
def test_bad_inputs_are_refused_with_a_message(changes, message):
    with pytest.raises(ValueError, match=message):
        InverseProbabilityWeighting().estimate_policy_value(**_with(**changes))


def test_each_slot_must_be_a_distribution():
    dist = np.zeros((2, 2, 2))
    dist[:, 0, 0] = 1.0
    dist[0, :, 1] = [0.5, 0.5]  # round 1's second slot sums to 0
    with pytest.raises(ValueError, match=r"\[round, slot\] \[\(1, 1\)\] do not"):
        check_ope_inputs(dist, position=np.array([0, 1]))


def test_position_is_required_for_lists_and_checked():
    dist = np.full((3, 2, 2), 0.5)
    with pytest.raises(ValueError, match="`position`.*required when action_dist has len_list = 2"):
        InverseProbabilityWeighting().estimate_policy_value(**_with(action_dist=dist))
    with pytest.raises(ValueError, match=r"0-based slot in \[0, 2\).*rounds \[2\].*shifted by 1"):
        InverseProbabilityWeighting().estimate_policy_value(**_with(action_dist=dist), position=np.array([0, 1, 2]))


def test_reward_model_shape_must_match_action_dist():
    with pytest.raises(ValueError, match=r"`estimated_rewards_by_reg_model` must be a 3-D array; got shape \(3, 2\)"):
        DoublyRobust().estimate_policy_value(**GOOD, estimated_rewards_by_reg_model=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"shape of action_dist \(3, 2, 1\).*got \(3, 3, 1\)"):
        DirectMethod().estimate_policy_value(GOOD["action_dist"], np.zeros((3, 3, 1)))
    with pytest.raises(ValueError, match="dr needs `estimated_rewards_by_reg_model`"):
        DoublyRobust().estimate_policy_value(**GOOD, estimated_rewards_by_reg_model=None)


def test_lists_are_accepted_like_arrays():
    as_lists = {k: v.tolist() for k, v in GOOD.items()}
    assert InverseProbabilityWeighting().estimate_policy_value(**as_lists) == pytest.approx(
        InverseProbabilityWeighting().estimate_policy_value(**GOOD)
    )
