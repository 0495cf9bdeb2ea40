"""Small logged data sets whose estimates are computed by hand in the comments (shared by the tests)."""

import numpy as np

# Example A: 4 rounds, 3 actions, one slot, a stochastic target policy.
#   w = π_e(a_i)/p_i = [0.5/0.5, 1.0/0.25, 0.5/0.25, 0.25/0.5] = [1, 4, 2, 0.5];  Σw = 7.5, Σw² = 21.25
#   w·r = [1, 0, 4, 0.5], Σ = 5.5
#   dm_i = Σ_a π_e q̂ = [0.5 + 0.125, 0.5, 0.3 + 1.0, 0.25 + 0.25 + 0.5] = [0.625, 0.5, 1.3, 1.0], Σ = 3.425
#   q̂(x_i, a_i) = [1.0, 0.5, 2.0, 1.0] → residuals r − q̂ = [0, −0.5, 0, 0]
A = {
    "action": np.array([0, 1, 2, 1]),
    "reward": np.array([1.0, 0.0, 2.0, 1.0]),
    "pscore": np.array([0.5, 0.25, 0.25, 0.5]),
    "action_dist": np.array([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5], [0.25, 0.25, 0.5]])[:, :, None],
}
Q_A = np.array([[1.0, 0.5, 0.0], [0.5, 0.5, 0.5], [0.0, 1.0, 2.0], [1.0, 1.0, 1.0]])[:, :, None]

# Example B: 3 rounds, 3 actions, two slots; the logged action sits at slot `position`.
#   π_e(a_i | slot k_i) = [row 0 slot 0 action 0: 0.6, row 1 slot 1 action 2: 0.5, row 2 slot 1 action 1: 0.5]
#   w = [0.6/0.5, 0.5/0.25, 0.5/0.5] = [1.2, 2, 1];  w·r = [1.2, 2, 0]
#   q̂(x, a, k) = 0.1·(a + 1) + 0.2·k;  dm_i at slot k_i = [0.6·0.1 + 0.4·0.2, 0.5·0.4 + 0.5·0.5, 0.5·0.3 + 0.5·0.4]
#                                                         = [0.14, 0.45, 0.35]
#   q̂(x_i, a_i, k_i) = [0.1, 0.5, 0.4] → residuals [0.9, 0.5, −0.4]
B_DIST = np.zeros((3, 3, 2))
B_DIST[:, :, 0] = [[0.6, 0.4, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
B_DIST[:, :, 1] = [[0.2, 0.3, 0.5], [0.0, 0.5, 0.5], [0.5, 0.5, 0.0]]
B = {
    "action": np.array([0, 2, 1]), "reward": np.array([1.0, 1.0, 0.0]), "pscore": np.array([0.5, 0.25, 0.5]),
    "position": np.array([0, 1, 1]), "action_dist": B_DIST,
}
Q_B = np.broadcast_to(0.1 * (np.arange(3)[:, None] + 1) + 0.2 * np.arange(2)[None, :], (3, 3, 2)).copy()
