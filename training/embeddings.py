"""Item and user embeddings from implicit feedback (E ≈ UᵀV), and fold-in of users against fixed item vectors.

Alternating least squares for implicit feedback (Hu, Koren & Volinsky, 2008): every (user, item) pair has a
preference p_ui = 1 if the user interacted with the item (0 otherwise) and a confidence c_ui = 1 + α·w_ui, where
w_ui = log(1 + Σ event weights) grows with views, carts and purchases. ALS minimises

    Σ_{u,i} c_ui (p_ui − x_uᵀ y_i)² + λ (Σ_u ‖x_u‖² + Σ_i ‖y_i‖²)

over all pairs, the unobserved ones included, by exact least-squares solves of one side given the other. Each
solve is x_u = (YᵀY + λI + Yᵀ(C_u − I)Y)⁻¹ Yᵀ C_u p_u; the sum over observed items is one sparse × dense product,
so a block of users is solved by one batched `np.linalg.solve`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from feature_repo.embeddings import EMBEDDING_DIM

INTERACTION_WEIGHTS: dict[str, float] = {"page_view": 1.0, "add_to_cart": 3.0, "purchase": 5.0}
"""Evidence of interest per event type; a pair's weight is log(1 + Σ weights of its events)."""

ROWS_PER_SOLVE = 2048
"""Rows solved per batched call: bounds the (rows, d, d) systems to a few MB at d = 16."""


@dataclass(frozen=True)
class Interactions:
    """Sparse (users × items) matrix of interaction weights w_ui, with the ids its rows and columns stand for."""

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray


def interaction_weights(events: pd.DataFrame) -> pd.DataFrame:
    """(user_id, item_id, weight) per pair with item events: weight = log(1 + Σ INTERACTION_WEIGHTS of its events).

    `events` are accepted events; promo exposures and rows without a user or item are ignored.
    """
    weight = events["event_type"].map(INTERACTION_WEIGHTS)
    keep = weight.notna() & events["user_id"].notna() & events["item_id"].notna()
    pairs = pd.DataFrame(
        {
            "user_id": events.loc[keep, "user_id"].to_numpy(dtype=np.int64),
            "item_id": events.loc[keep, "item_id"].to_numpy(dtype=np.int64),
            "weight": weight[keep].to_numpy(dtype=np.float64),
        }
    )
    summed = pairs.groupby(["user_id", "item_id"], as_index=False, sort=True)["weight"].sum()
    summed["weight"] = np.log1p(summed["weight"])
    return summed


def interaction_matrix(events: pd.DataFrame, item_ids: np.ndarray | None = None) -> Interactions:
    """The weight matrix of `events`: rows are users with item events (sorted), columns `item_ids`.

    With `item_ids` None the columns are every item seen (sorted); given (the items of a trained model), events on
    other items are dropped, since a vector can only be solved against items that have one.
    """
    pairs = interaction_weights(events)
    if item_ids is None:
        item_ids = np.unique(pairs["item_id"].to_numpy())
    item_ids = np.asarray(item_ids, dtype=np.int64)
    col = pd.Index(item_ids).get_indexer(pairs["item_id"].to_numpy())
    pairs, col = pairs[col >= 0], col[col >= 0]
    user_ids, row = np.unique(pairs["user_id"].to_numpy(), return_inverse=True)
    matrix = sp.csr_matrix((pairs["weight"].to_numpy(), (row, col)), shape=(len(user_ids), len(item_ids)))
    return Interactions(matrix=matrix, user_ids=user_ids, item_ids=item_ids)


def _solve_rows(weights: sp.csr_matrix, fixed: np.ndarray, reg: float, alpha: float) -> np.ndarray:
    """Least-squares vectors of every row of `weights` against the fixed vectors of its columns."""
    n_rows, d = weights.shape[0], fixed.shape[1]
    if weights.shape[1] != fixed.shape[0]:
        raise ValueError(f"weights have {weights.shape[1]} columns but there are {fixed.shape[0]} fixed vectors")
    gram = fixed.T @ fixed + reg * np.eye(d)
    # vec(y yᵀ) per column: Σ_i (c_ui − 1) y_i y_iᵀ for a block of rows is then one sparse × dense product.
    outer = (fixed[:, :, None] * fixed[:, None, :]).reshape(len(fixed), d * d)
    out = np.zeros((n_rows, d))
    for lo in range(0, n_rows, ROWS_PER_SOLVE):
        block = weights[lo : lo + ROWS_PER_SOLVE]
        extra = (block * alpha).tocsr()  # c − 1 on observed pairs
        confidence = extra.copy()
        confidence.data += 1.0
        lhs = gram[None, :, :] + (extra @ outer).reshape(-1, d, d)
        rhs = confidence @ fixed  # Yᵀ C_u p_u: p is 1 exactly on the observed pairs
        out[lo : lo + block.shape[0]] = np.linalg.solve(lhs, rhs[:, :, None])[:, :, 0]
    return out


def fold_in(user_rows: sp.csr_matrix, item_factors: np.ndarray, reg: float, alpha: float) -> np.ndarray:
    """User vectors for interaction rows (columns = the items of `item_factors`), the item vectors held fixed.

    This is ALS's user step: used between full retrains to refresh active users and to place new ones. A user
    without interactions gets the zero vector (every score 0).
    """
    return _solve_rows(sp.csr_matrix(user_rows, dtype=np.float64), np.asarray(item_factors, np.float64), reg, alpha)


def implicit_loss(
    weights: sp.csr_matrix, user_factors: np.ndarray, item_factors: np.ndarray, reg: float, alpha: float
) -> float:
    """The ALS objective over all (user, item) pairs, computed without the dense matrix.

    Σ_all c(p − s)² = Σ_all s² + Σ_observed [c (1 − s)² − s²] with c = 1 and p = 0 off the observed pairs, and
    Σ_all s² = trace((XᵀX)(YᵀY)).
    """
    coo = weights.tocoo()
    s = np.einsum("ij,ij->i", user_factors[coo.row], item_factors[coo.col])
    c = 1.0 + alpha * coo.data
    all_pairs = float(np.sum((user_factors.T @ user_factors) * (item_factors.T @ item_factors)))
    observed = float(np.sum(c * (1.0 - s) ** 2 - s**2))
    penalty = reg * float(np.sum(user_factors**2) + np.sum(item_factors**2))
    return all_pairs + observed + penalty


class ImplicitALS:
    """Implicit-feedback matrix factorisation by alternating least squares; deterministic under `random_state`."""

    def __init__(
        self,
        factors: int = EMBEDDING_DIM,
        regularization: float = 100.0,
        alpha: float = 3.0,
        iterations: int = 10,
        random_state: int = 0,
    ):
        # Defaults chosen on the demo shop (docs/benchmarks.md, "Embeddings and ANN candidate generation"): with
        # λ = 100, α = 3 the items a user touches in the last 6 days are recalled at 20 almost as well as by the
        # simulator's true P(i | u); small λ overfits d = 16 to the ~20 items a user has seen.
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.random_state = random_state

    def get_params(self) -> dict[str, float | int]:
        """Constructor arguments, as given."""
        return {
            "factors": self.factors, "regularization": self.regularization, "alpha": self.alpha,
            "iterations": self.iterations, "random_state": self.random_state,
        }

    def fit(self, weights: sp.csr_matrix) -> "ImplicitALS":
        """Learn `user_factors_` (rows) and `item_factors_` (columns) of a (users × items) weight matrix.

        Every iteration solves items given users, then users given items, so the final user vectors are exactly
        `fold_in(weights, item_factors_, ...)`. `loss_` holds the objective after each iteration (non-increasing).
        """
        if self.iterations < 1 or self.factors < 1:
            raise ValueError(f"iterations and factors must be >= 1, got {self.iterations} and {self.factors}")
        weights = sp.csr_matrix(weights, dtype=np.float64)
        if weights.nnz and weights.data.min() <= 0:
            raise ValueError("interaction weights must be > 0 (log(1 + Σ event weights) of observed pairs)")
        rng = np.random.default_rng(self.random_state)
        users = rng.normal(0.0, 0.1, size=(weights.shape[0], self.factors))
        transposed = weights.T.tocsr()
        self.loss_: list[float] = []
        for _ in range(self.iterations):
            items = _solve_rows(transposed, users, self.regularization, self.alpha)
            users = _solve_rows(weights, items, self.regularization, self.alpha)
            self.loss_.append(implicit_loss(weights, users, items, self.regularization, self.alpha))
        self.user_factors_, self.item_factors_ = users, items
        return self

    def scores(self, user_factors: np.ndarray) -> np.ndarray:
        """Inner products x_uᵀ y_i of the given user vectors with every item vector, shape (users, items)."""
        if not hasattr(self, "item_factors_"):
            raise RuntimeError("ImplicitALS is not fitted; call fit(weights) first")
        return np.asarray(user_factors) @ self.item_factors_.T


@dataclass(frozen=True)
class FoldIn:
    """Refreshed vectors of active users, and what could not be used."""

    user_ids: np.ndarray
    vectors: np.ndarray
    events_on_unknown_items: int  # item events on items the last full train did not see (no vector to solve on)
    users_without_known_items: int  # active users all of whose items are unknown: they keep their previous vector


def active_users(events: pd.DataFrame, since: pd.Timestamp) -> np.ndarray:
    """Users with an item event (view, cart, purchase) stamped after `since`, sorted."""
    item_event = events["event_type"].isin(list(INTERACTION_WEIGHTS)) & events["item_id"].notna()
    recent = item_event & events["user_id"].notna() & (events["ts"] > since)
    return np.unique(events.loc[recent, "user_id"].to_numpy(dtype=np.int64))


def fold_in_users(
    events: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray, item_factors: np.ndarray, reg: float, alpha: float
) -> FoldIn:
    """Vectors of `user_ids` from their whole history in `events`, solved against fixed item vectors."""
    mine = events[events["user_id"].isin(user_ids)]
    known = mine["item_id"].isin(item_ids)
    unknown = int((mine["event_type"].isin(list(INTERACTION_WEIGHTS)) & mine["item_id"].notna() & ~known).sum())
    rows = interaction_matrix(mine, item_ids=item_ids)
    return FoldIn(
        user_ids=rows.user_ids,
        vectors=fold_in(rows.matrix, item_factors, reg, alpha),
        events_on_unknown_items=unknown,
        users_without_known_items=len(np.setdiff1d(user_ids, rows.user_ids)),
    )
