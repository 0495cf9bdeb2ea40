"""The logged probabilities are the frequencies: 100,000 decisions drawn in-process exactly as the service draws them
(`draw_slate(scores, attributes, 1, penalty, exploration, rng, spreads)` on u = μ + γ·s, one generator at a fixed
seed), for every exploration method over a few score/uncertainty profiles, pass Pearson's χ² test of the empirical
action counts against the sums of the logged distributions; a redraw after a reservation conflict, logged with its
conditional probability, fails it. Then Thompson sampling's own properties: greedy at σ = 0, exact symmetry, the
normal probabilities within Monte Carlo error, monotone in μ, columns that do not depend on K, and the same
probabilities offline (training.ope) as in serving."""

import math

import numpy as np
import pytest
from scipy.stats import chi2, chisquare, norm

from serving.policy.exploration import (
    THOMPSON_DRAWS,
    Exploration,
    action_probabilities,
    distribution,
    thompson_normals,
)
from serving.policy.slates import draw_slate
from serving.policy.uncertainty import with_bonus
from training.ope import action_dist_from_scores

SEED = 20261206
DECISIONS = 100_000
P_ACCEPT = 1e-3  # a correct policy's pooled χ² p-value at the fixed seed must exceed this
P_DETECT = 1e-6  # a wrong logged probability must fall below this

# (μ, σ) per candidate, the neutral action first (μ = σ = 0, as Champion.net_uplift gives it)
PROFILES = {
    "two_close": (np.array([0.0, 0.3, 0.25]), np.array([0.0, 0.2, 0.4])),
    "five_mixed": (np.array([0.0, 0.1, 0.1, -0.2, 0.05]), np.array([0.0, 0.05, 0.3, 0.5, 0.1])),
    "tied_certain": (np.array([0.0, 0.0]), np.array([0.0, 0.0])),
    "eight_random": (
        np.concatenate(([0.0], np.random.default_rng(3).normal(0.0, 0.2, 7))),
        np.concatenate(([0.0], np.random.default_rng(4).uniform(0.0, 0.4, 7))),
    ),
}
# method name → (exploration, bonus γ): the bonus is UCB-style, u = μ + γ·σ before the method's own probabilities
METHODS = {
    "epsilon_greedy": (Exploration("epsilon_greedy", epsilon=0.2), 0.0),
    "softmax": (Exploration("softmax", temperature=0.2, floor=0.02), 0.0),
    "thompson": (Exploration("thompson"), 0.0),
    "thompson_floor": (Exploration("thompson", floor=0.03), 0.0),
    "bonus": (Exploration("epsilon_greedy", epsilon=0.1), 1.0),
}
PER_CELL = DECISIONS // (len(PROFILES) * len(METHODS))  # 5,000 decisions per (method, profile)


def decide(mu, sigma, exploration, gamma, rng):
    """One single-slot decision as DecisionService._draw_and_reserve makes it: (chosen index, logged distribution,
    logged chosen probability)."""
    scores = with_bonus(mu, sigma, gamma)
    slate = draw_slate(scores, np.zeros((len(mu), 1)), 1, 0.0, exploration, rng, sigma)
    return slate.indices[0], np.array(slate.first_slot), slate.probabilities[0]


def pearson(observed: np.ndarray, expected: np.ndarray) -> tuple[float, int]:
    """χ² statistic and degrees of freedom of counts vs expected counts; an action expected 0 times must not occur."""
    drawable = expected > 0
    assert observed[~drawable].sum() == 0, "an action logged with probability 0 was served"
    if drawable.sum() < 2:
        return 0.0, 0
    return float(chisquare(observed[drawable], expected[drawable]).statistic), int(drawable.sum()) - 1


def pooled_p_value(cells: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Pearson's χ² pooled over independent cells: statistics and degrees of freedom add."""
    stats = [pearson(observed, expected) for observed, expected in cells]
    statistic, dof = sum(s for s, _ in stats), sum(d for _, d in stats)
    return float(chi2.sf(statistic, dof)) if dof else 1.0


def test_logged_probabilities_match_the_frequencies_of_100000_decisions():
    rng = np.random.default_rng(SEED)
    p_values = {}
    for name, (exploration, gamma) in METHODS.items():
        cells = []
        for mu, sigma in PROFILES.values():
            observed, expected = np.zeros(len(mu)), np.zeros(len(mu))
            for _ in range(PER_CELL):
                chosen, logged, chosen_p = decide(mu, sigma, exploration, gamma, rng)
                assert chosen_p == logged[chosen] > 0.0  # the propensity is the logged distribution's entry
                observed[chosen] += 1
                expected += logged
            cells.append((observed, expected))
        p_values[name] = pooled_p_value(cells)
    assert PER_CELL * len(PROFILES) * len(METHODS) == DECISIONS
    assert all(p > P_ACCEPT for p in p_values.values()), p_values


def test_a_redraw_logged_with_its_conditional_probability_is_detected():
    """The service's redraw: the drawn action's last slot was taken by a concurrent request (here with probability
    1/2), so it draws again without it. Logging the redraw's distribution as if it were the propensity overstates
    the contended action's probability: the χ² test must see it, which is why such decisions are excluded."""
    rng = np.random.default_rng(SEED)
    mu, sigma = PROFILES["five_mixed"]
    exploration = Exploration("thompson", floor=0.03)
    contended = int(np.argmax(action_probabilities(mu, exploration, sigma)))
    observed, expected = np.zeros(len(mu)), np.zeros(len(mu))
    for _ in range(20_000):
        chosen, logged, _ = decide(mu, sigma, exploration, 0.0, rng)
        if chosen == contended and rng.random() < 0.5:  # refused at reservation: redraw from the others
            pool = np.flatnonzero(np.arange(len(mu)) != contended)
            redrawn, redraw_logged, _ = decide(mu[pool], sigma[pool], exploration, 0.0, rng)
            chosen, logged = int(pool[redrawn]), np.zeros(len(mu))
            logged[pool] = redraw_logged
        observed[chosen] += 1
        expected += logged
    assert pooled_p_value([(observed, expected)]) < P_DETECT


def test_a_draw_logged_with_another_methods_probabilities_is_detected():
    """The test has power against a subtler error too: drawing with thompson's floor 0.03, logging floor 0.01."""
    rng = np.random.default_rng(SEED)
    mu, sigma = PROFILES["eight_random"]
    wrong = action_probabilities(mu, Exploration("thompson", floor=0.01), sigma)
    observed = np.zeros(len(mu))
    for _ in range(20_000):
        observed[decide(mu, sigma, Exploration("thompson", floor=0.03), 0.0, rng)[0]] += 1
    assert pooled_p_value([(observed, 20_000 * wrong)]) < P_DETECT


def test_thompson_with_no_uncertainty_is_greedy():
    thompson, greedy = Exploration("thompson"), Exploration("greedy")
    rng = np.random.default_rng(1)
    for k in (1, 2, 5, 50, 130):
        scores = rng.normal(size=k)
        np.testing.assert_array_equal(action_probabilities(scores, thompson, np.zeros(k)),
                                      action_probabilities(scores, greedy))
    # ties go to the first maximum, as greedy's; certain actions lose to nothing when the uncertain ones are far below
    assert action_probabilities([1.0, 1.0, 0.0], thompson, [0.0, 0.0, 0.0]).tolist() == [1.0, 0.0, 0.0]
    assert action_probabilities([1.0, 0.0], thompson, [0.0, 0.01]).tolist() == [1.0, 0.0]


def test_thompson_splits_two_equal_actions_exactly_in_half():
    """The rows come in antithetic pairs (Z, −Z): whoever wins one row of a pair loses the other."""
    assert action_probabilities([0.2, 0.2], Exploration("thompson"), [0.3, 0.3]).tolist() == [0.5, 0.5]


@pytest.mark.parametrize(
    ("mu", "sigma"), [((0.0, 0.1), (0.0, 0.2)), ((0.3, 0.0), (0.5, 0.4)), ((0.0, -1.0), (1.0, 1.0))]
)
def test_thompson_gives_the_normal_probability_of_being_best_within_monte_carlo_error(mu, sigma):
    p = action_probabilities(np.array(mu), Exploration("thompson"), np.array(sigma))
    exact = norm.cdf((mu[1] - mu[0]) / math.hypot(*sigma))  # P(μ1 + σ1 Z1 > μ0 + σ0 Z0)
    assert p[1] == pytest.approx(exact, abs=4.0 * math.sqrt(exact * (1 - exact) / THOMPSON_DRAWS) + 1e-12)
    assert (p * THOMPSON_DRAWS).tolist() == np.round(p * THOMPSON_DRAWS).tolist()  # shares of the 512 rows


def test_thompson_probability_never_falls_when_an_actions_score_rises():
    """Common random numbers: raising μ_i can only make i win more of the same rows."""
    rng = np.random.default_rng(2)
    thompson = Exploration("thompson")
    for _ in range(20):
        mu, sigma = rng.normal(size=6), rng.uniform(0.0, 1.0, 6)
        before = action_probabilities(mu, thompson, sigma)
        raised = mu.copy()
        raised[2] += 0.3
        after = action_probabilities(raised, thompson, sigma)
        assert after[2] >= before[2] and (np.delete(after, 2) <= np.delete(before, 2)).all()


def test_thompson_floor_mixes_uniform_mass_in_as_softmax_does():
    mu, sigma = np.array([0.0, 1.0, -3.0]), np.array([0.0, 0.1, 0.1])
    plain = action_probabilities(mu, Exploration("thompson"), sigma)
    floored = action_probabilities(mu, Exploration("thompson", floor=0.05), sigma)
    np.testing.assert_allclose(floored, 0.05 + (1 - 3 * 0.05) * plain, rtol=0, atol=1e-15)
    assert floored.min() >= 0.05 - 1e-15 and abs(floored.sum() - 1.0) <= 1e-12
    assert action_probabilities(mu, Exploration("thompson", floor=0.5), sigma).tolist() == [1 / 3] * 3


def test_the_common_normals_are_fixed_and_their_columns_do_not_depend_on_k():
    wide = thompson_normals(150)
    assert wide.shape == (THOMPSON_DRAWS, 150) and not wide.flags.writeable
    np.testing.assert_array_equal(thompson_normals(7), wide[:, :7])
    np.testing.assert_array_equal(wide[: THOMPSON_DRAWS // 2], -wide[THOMPSON_DRAWS // 2:])  # antithetic pairs
    block = np.random.default_rng([1405, 2]).standard_normal((THOMPSON_DRAWS // 2, 64))
    np.testing.assert_array_equal(wide[: THOMPSON_DRAWS // 2, 128:150], block[:, :22])  # a pure function of the seed
    assert abs(wide.mean()) < 1e-12 and 0.95 < wide.std() < 1.05


def test_thompson_needs_the_uncertainties_and_checks_them():
    thompson = Exploration("thompson")
    with pytest.raises(ValueError, match=r"thompson exploration needs each action's uncertainty"):
        action_probabilities([0.0, 1.0], thompson)
    with pytest.raises(ValueError, match=r"spreads must be 1-D with one σ per action \(2\); got shape \(3,\)"):
        action_probabilities([0.0, 1.0], thompson, [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"spreads must be finite and >= 0 .*positions \[1\]"):
        action_probabilities([0.0, 1.0], thompson, [0.1, np.nan])
    with pytest.raises(ValueError, match=r"spreads must be finite and >= 0 .*positions \[0\]"):
        draw_slate([0.0, 1.0], np.zeros((2, 1)), 1, 0.0, thompson, np.random.default_rng(0), [-0.1, 0.0])
    # the other methods do not read them
    assert action_probabilities([0.0, 1.0], Exploration("greedy"), [np.nan, -1.0]).tolist() == [0.0, 1.0]


def test_a_thompson_slate_uses_each_remaining_candidates_own_uncertainty():
    mu, sigma = np.array([0.0, 0.5, 0.4, 0.1]), np.array([0.0, 0.05, 0.6, 0.3])
    thompson = Exploration("thompson", floor=0.01)
    slate = draw_slate(mu, np.eye(4), 3, 0.0, thompson, np.random.default_rng(5), sigma)
    assert slate.first_slot == action_probabilities(mu, thompson, sigma).tolist()
    remaining = [i for i in range(4) if i != slate.indices[0]]
    second = np.zeros(4)
    second[remaining] = action_probabilities(mu[remaining], thompson, sigma[remaining])
    assert slate.slot_distributions[1] == second.tolist()


def test_training_computes_the_same_thompson_probabilities_as_serving():
    """One definition: training.ope's target-policy distribution is serving's, bit for bit, for the same (μ, σ)."""
    rng = np.random.default_rng(6)
    vocabulary = [f"a{j}" for j in range(12)]
    candidates, scores, spreads = [], [], []
    for k in (2, 5, 12, 3):
        candidates.append(list(rng.choice(vocabulary, size=k, replace=False)))
        scores.append(rng.normal(size=k).tolist())
        spreads.append(rng.uniform(0.0, 0.5, k).tolist())
    thompson = Exploration("thompson", floor=0.02)
    dist = action_dist_from_scores(candidates, scores, vocabulary, thompson, spreads)
    for row, names in enumerate(candidates):
        columns = [vocabulary.index(a) for a in names]
        with np.errstate(over="ignore"):
            served = distribution(np.array(scores[row]), thompson, np.array(spreads[row]))
        assert dist[row, columns, 0].tolist() == served.tolist()
    with pytest.raises(ValueError, match=r"round 0: thompson exploration needs each action's uncertainty"):
        action_dist_from_scores(candidates, scores, vocabulary, thompson)
