import numpy as np
import pytest

from serving.policy import choose, eligible_actions

ACTIONS = ["no_action", "a", "b", "c"]


def test_greedy_action_gets_one_minus_epsilon_plus_its_share():
    choice = choose({"no_action": 0.0, "a": 0.3, "b": 1.2, "c": -0.1}, epsilon=0.2, rng=np.random.default_rng(0))
    assert choice.probabilities == pytest.approx({"no_action": 0.05, "a": 0.05, "b": 0.85, "c": 0.05})
    assert choice.propensity == pytest.approx(choice.probabilities[choice.action_id])


def test_without_exploration_the_best_is_chosen_with_probability_one():
    choice = choose({"no_action": 0.0, "a": -0.5}, epsilon=0.0, rng=np.random.default_rng(0))
    assert (choice.action_id, choice.propensity, choice.score) == ("no_action", 1.0, 0.0)


def test_empirical_frequencies_match_the_logged_probabilities():
    rng = np.random.default_rng(1)
    scores = {"no_action": 0.0, "a": 2.0, "b": 1.0}
    picks = [choose(scores, 0.3, rng).action_id for _ in range(6000)]
    freq = {a: picks.count(a) / len(picks) for a in scores}
    assert freq["a"] == pytest.approx(0.8, abs=0.02)
    assert freq["b"] == pytest.approx(0.1, abs=0.015)


def test_consent_and_candidates_gate_eligibility():
    assert eligible_actions(ACTIONS, "no_action", True, None) == ACTIONS
    assert eligible_actions(ACTIONS, "no_action", False, None) == ["no_action"]
    assert eligible_actions(ACTIONS, "no_action", True, ["c", "a"]) == ["a", "c"]
    assert eligible_actions(ACTIONS, "no_action", False, ["c"]) == []


@pytest.mark.parametrize(("scores", "epsilon", "message"), [({}, 0.1, "no eligible action"), ({"a": 1.0}, 1.5, "epsilon")])
def test_bad_policy_input(scores, epsilon, message):
    with pytest.raises(ValueError, match=message):
        choose(scores, epsilon, np.random.default_rng(0))
