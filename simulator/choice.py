"""Which item a user looks at or buys: P(i | u) ∝ taste[u, cat_i] · price_i^(−2·price_sensitivity_u).

Pure array functions (no Shop) so that world.py can use them while building the shop.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

# Users per block when materialising (users × items) matrices; keeps peak memory at a few tens of MB.
CHUNK_USERS = 4096


def user_chunks(n: int, chunk: int = CHUNK_USERS) -> Iterator[slice]:
    """Yield consecutive slices covering range(n) in blocks of at most `chunk`."""
    for lo in range(0, n, chunk):
        yield slice(lo, min(lo + chunk, n))


def choice_probabilities(
    price_sensitivity: np.ndarray,
    taste: np.ndarray,
    item_category: np.ndarray,
    item_price: np.ndarray,
) -> np.ndarray:
    """Row-normalised P(i | u) for the given users, shape (n_users, n_items)."""
    # Log space with a per-row max shift: price^(-2s) spans many decades and exp() must not overflow.
    logits = np.log(taste)[:, item_category] - 2.0 * price_sensitivity[:, None] * np.log(item_price)[None, :]
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return probs


def expected_item_values(
    price_sensitivity: np.ndarray,
    taste: np.ndarray,
    item_category: np.ndarray,
    item_price: np.ndarray,
    values: np.ndarray,
) -> np.ndarray:
    """Σ_i P(i | u) · values[i, ...] per user; values is (n_items,) or (n_items, k); chunked over users."""
    out = np.empty((len(price_sensitivity),) + values.shape[1:], dtype=np.float64)
    for block in user_chunks(len(price_sensitivity)):
        probs = choice_probabilities(price_sensitivity[block], taste[block], item_category, item_price)
        out[block] = probs @ values
    return out


def sample_items(
    rng: np.random.Generator,
    price_sensitivity: np.ndarray,
    taste: np.ndarray,
    item_category: np.ndarray,
    item_price: np.ndarray,
    user_ids: np.ndarray,
) -> np.ndarray:
    """Draw one item per entry of user_ids from P(i | user), vectorised by inverse CDF."""
    user_ids = np.asarray(user_ids, dtype=np.int64)
    uniform = rng.random(len(user_ids))
    items = np.empty(len(user_ids), dtype=np.int64)
    if len(user_ids) == 0:
        return items
    n_items = len(item_price)
    uniq, inverse = np.unique(user_ids, return_inverse=True)
    for block in user_chunks(len(uniq)):
        cdf = np.cumsum(
            choice_probabilities(price_sensitivity[uniq[block]], taste[uniq[block]], item_category, item_price),
            axis=1,
        )
        cdf[:, -1] = 1.0  # guard against round-off so every uniform in [0, 1) lands inside its row
        rows = np.arange(cdf.shape[0])
        # Offsetting row r by r makes one globally sorted array, so one searchsorted serves all draws.
        flat = (cdf + rows[:, None]).ravel()
        sel = np.flatnonzero((inverse >= block.start) & (inverse < block.stop))
        local_row = inverse[sel] - block.start
        pos = np.searchsorted(flat, local_row + uniform[sel], side="right")
        items[sel] = np.clip(pos - local_row * n_items, 0, n_items - 1)
    return items
