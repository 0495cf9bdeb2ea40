"""action_dist builders: logged candidate probabilities, the service's exploration, decision records, BTS."""

import numpy as np
import pandas as pd
import pytest

from serving.policy.exploration import Exploration, action_probabilities
from training.ope import (
    action_dist_from_candidates,
    bandit_feedback_from_decisions,
    bernoulli_ts_action_dist,
    convert_to_action_dist,
    epsilon_greedy_action_dist,
    softmax_action_dist,
)

VOCAB = ["a", "b", "c", "d"]
CANDIDATES = [["a", "c"], ["d"], ["b", "a", "d"]]


def test_logged_probabilities_land_on_their_columns_and_others_get_zero():
    dist = action_dist_from_candidates(CANDIDATES, [[0.3, 0.7], [1.0], [0.2, 0.5, 0.3]], VOCAB)
    expected = np.array([[0.3, 0.0, 0.7, 0.0], [0.0, 0.0, 0.0, 1.0], [0.5, 0.2, 0.0, 0.3]])
    np.testing.assert_array_equal(dist[:, :, 0], expected)
    assert dist.shape == (3, 4, 1)


@pytest.mark.parametrize(
    ("candidates", "probabilities", "message"),
    [
        ([["a", "z"]], [[0.5, 0.5]], r"round 0: candidates \['z'\] are not in action_ids"),
        ([["a", "a"]], [[0.5, 0.5]], "repeat an action id"),
        ([["a", "b"]], [[0.5, 0.4]], "sum to 1"),
        ([["a", "b"]], [[1.0]], "2 candidates but 1 probabilities"),
        ([[]], [[]], "no candidates"),
    ],
)
def test_bad_candidate_records(candidates, probabilities, message):
    with pytest.raises(ValueError, match=message):
        action_dist_from_candidates(candidates, probabilities, VOCAB)


def test_epsilon_greedy_is_the_services_formula():
    scores = [[1.0, 3.0], [0.0], [2.0, 2.0, -1.0]]  # round 2: tie between b and a, the first (b) wins
    dist = epsilon_greedy_action_dist(CANDIDATES, scores, VOCAB, epsilon=0.3)
    # ε/K + (1 − ε)·[argmax]: round 0 K=2 → a 0.15, c 0.85; round 1 K=1 → d 1; round 2 K=3 → b 0.8, a 0.1, d 0.1
    expected = np.array([[0.15, 0.0, 0.85, 0.0], [0.0, 0.0, 0.0, 1.0], [0.1, 0.8, 0.0, 0.1]])
    np.testing.assert_allclose(dist[:, :, 0], expected, atol=1e-15)


def test_softmax_with_floor_is_the_services_formula():
    scores = [[0.0, np.log(3.0)], [5.0], [0.0, 0.0, 0.0]]
    dist = softmax_action_dist(CANDIDATES, scores, VOCAB, temperature=1.0, floor=0.1)
    # round 0: f + (1 − 2f)·[1/4, 3/4] = [0.1 + 0.2, 0.1 + 0.6]; round 2: uniform thirds
    np.testing.assert_allclose(dist[0, [0, 2], 0], [0.3, 0.7], atol=1e-15)
    np.testing.assert_allclose(dist[2, [1, 0, 3], 0], [1 / 3] * 3, atol=1e-15)
    exploration = Exploration("softmax", temperature=1.0, floor=0.1)
    np.testing.assert_array_equal(dist[0, [0, 2], 0], action_probabilities(np.array(scores[0]), exploration))


def test_bad_scores_name_the_round():
    with pytest.raises(ValueError, match="round 1: scores must be finite"):
        epsilon_greedy_action_dist(CANDIDATES, [[1.0, 2.0], [np.nan], [0.0, 0.0, 0.0]], VOCAB, epsilon=0.1)


def test_decision_records_become_bandit_feedback():
    records = [
        {"candidates": ["a", "c"], "probabilities": [0.3, 0.7], "chosen": ["c"], "chosen_probabilities": [0.7]},
        {"candidates": ["b", "a", "d"], "probabilities": [0.2, 0.5, 0.3], "chosen": ["a", "d"],
         "chosen_probabilities": [0.5, 0.6]},
    ]
    feedback = bandit_feedback_from_decisions(records, VOCAB)
    np.testing.assert_array_equal(feedback["action"], [2, 0])
    np.testing.assert_array_equal(feedback["pscore"], [0.7, 0.5])
    assert feedback["pi_b"].shape == (2, 4, 1) and feedback["pi_b"][1, 3, 0] == 0.3
    as_frame = bandit_feedback_from_decisions(pd.DataFrame(records), VOCAB)  # e.g. read from the decision log
    np.testing.assert_array_equal(as_frame["pscore"], feedback["pscore"])
    records[0]["chosen_probabilities"] = [0.3]
    with pytest.raises(ValueError, match="round 0: chosen_probabilities.*inconsistent"):
        bandit_feedback_from_decisions(records, VOCAB)
    with pytest.raises(ValueError, match=r"round 0: the decision record lacks \['chosen'\]"):
        bandit_feedback_from_decisions([{"candidates": ["a"], "probabilities": [1.0], "chosen_probabilities": [1]}],
                                       VOCAB)


def test_a_decision_served_after_a_reservation_redraw_is_not_bandit_feedback():
    """Its logged probabilities are the redraw's, conditional on a refusal that depended on concurrent requests:
    not a propensity, so it is refused (logged_training counts and leaves such records out)."""
    record = {"candidates": ["a", "c"], "probabilities": [0.3, 0.7], "chosen": ["c"], "chosen_probabilities": [0.7]}
    kept = bandit_feedback_from_decisions([{**record, "redraws": 0}, {**record, "redraws": None}], VOCAB)
    np.testing.assert_array_equal(kept["pscore"], [0.7, 0.7])
    with pytest.raises(ValueError, match=r"round 1: served after 2 reservation redraw\(s\): its probabilities are "
                                         r"conditional on concurrent requests, not a propensity"):
        bandit_feedback_from_decisions([record, {**record, "redraws": 2}], VOCAB)
    with pytest.raises(ValueError, match=r"round 0: served after 1 reservation redraw"):
        bandit_feedback_from_decisions(pd.DataFrame([{**record, "redraws": 1}]), VOCAB)  # as drained: numpy ints


def test_convert_to_action_dist_is_one_hot_per_slot():
    dist = convert_to_action_dist(3, np.array([[0, 2], [1, 0]]))
    assert dist.shape == (2, 3, 2)
    assert dist[0, 0, 0] == dist[0, 2, 1] == dist[1, 1, 0] == dist[1, 0, 1] == 1.0
    np.testing.assert_array_equal(dist.sum(axis=1), 1.0)


def _obp_bts_loop(alpha, beta, len_list, n_sim, seed):
    """OBP's BernoulliTS.compute_batch_action_dist loop with zero counts: one Beta vector per simulated round."""
    random_ = np.random.RandomState(seed)
    counts = np.zeros((len(alpha), len_list))
    for _ in range(n_sim):
        chosen = random_.beta(a=alpha, b=beta).argsort()[::-1][:len_list]
        for slot in range(len_list):
            counts[chosen[slot], slot] += 1
    return counts / n_sim


def test_bernoulli_ts_matches_obps_monte_carlo_draw_for_draw():
    alpha, beta = np.array([2.0, 5.0, 1.0, 3.0, 8.0]), np.array([30.0, 40.0, 10.0, 50.0, 60.0])
    dist = bernoulli_ts_action_dist(alpha, beta, len_list=2, n_rounds=4, n_sim=3000, random_state=7)
    np.testing.assert_array_equal(dist[0], _obp_bts_loop(alpha, beta, 2, 3000, 7))
    assert dist.shape == (4, 5, 2) and (dist == dist[0]).all()
    np.testing.assert_allclose(dist.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="len_list"):
        bernoulli_ts_action_dist(alpha, beta, len_list=6)
