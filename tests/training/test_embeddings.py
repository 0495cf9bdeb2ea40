"""Implicit-feedback ALS: interaction weights, exact least-squares steps, the objective, fold-in, known structure."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from training.embeddings import (
    ImplicitALS,
    active_users,
    fold_in,
    fold_in_users,
    implicit_loss,
    interaction_matrix,
    interaction_weights,
)

T0 = pd.Timestamp("2026-10-01", tz="UTC")
GROUPS, ITEMS_PER_GROUP, USERS_PER_GROUP = 4, 10, 40


def events(rows: list[tuple[str, int, int | None]], start: pd.Timestamp = T0) -> pd.DataFrame:
    """Validated-event columns the embeddings read: (event_type, user_id, item_id), one minute apart."""
    frame = pd.DataFrame(rows, columns=["event_type", "user_id", "item_id"])
    frame["ts"] = start + pd.to_timedelta(np.arange(len(frame)), unit="min")
    frame["event_type"] = frame["event_type"].astype("string")
    return frame.astype({"user_id": "Int64", "item_id": "Int64"})


def grouped_events(seed: int = 0) -> pd.DataFrame:
    """Users of group g view (and sometimes buy) 4–6 of the 10 items of group g, and nothing else."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(GROUPS * USERS_PER_GROUP):
        group = user // USERS_PER_GROUP
        for item in rng.choice(ITEMS_PER_GROUP, size=rng.integers(4, 7), replace=False):
            item_id = 100 + group * ITEMS_PER_GROUP + int(item)
            rows += [("page_view", user, item_id)] * int(rng.integers(1, 4))
            if rng.random() < 0.3:
                rows += [("add_to_cart", user, item_id), ("purchase", user, item_id)]
    return events(rows)


def als(seed: int = 3) -> ImplicitALS:
    """The settings these tests fit with (reg 0.5, α 10: the toy data is tiny)."""
    return ImplicitALS(factors=8, regularization=0.5, alpha=10.0, iterations=12, random_state=seed)


@pytest.fixture(scope="module")
def grouped():
    interactions = interaction_matrix(grouped_events())
    return interactions, als().fit(interactions.matrix)


def test_pair_weight_is_log_of_summed_event_weights():
    frame = events([
        ("page_view", 1, 10), ("page_view", 1, 10), ("add_to_cart", 1, 10), ("purchase", 1, 10),
        ("page_view", 1, 11), ("purchase", 2, 10), ("promo_exposure", 2, None),
    ])
    weights = interaction_weights(frame)
    assert weights.to_dict("list") == {
        "user_id": [1, 1, 2], "item_id": [10, 11, 10], "weight": [np.log1p(10.0), np.log1p(1.0), np.log1p(5.0)]
    }
    interactions = interaction_matrix(frame)
    assert list(interactions.user_ids) == [1, 2] and list(interactions.item_ids) == [10, 11]
    expected = [[np.log1p(10.0), np.log1p(1.0)], [np.log1p(5.0), 0.0]]
    np.testing.assert_array_equal(interactions.matrix.toarray(), expected)


def test_matrix_against_given_items_keeps_their_order_and_drops_other_items():
    frame = events([("page_view", 5, 10), ("page_view", 5, 99), ("page_view", 6, 99), ("purchase", 7, 11)])
    interactions = interaction_matrix(frame, item_ids=np.array([11, 10]))
    assert list(interactions.item_ids) == [11, 10] and list(interactions.user_ids) == [5, 7]
    np.testing.assert_array_equal(interactions.matrix.toarray(), [[0.0, np.log1p(1.0)], [np.log1p(5.0), 0.0]])


def test_fold_in_is_the_closed_form_least_squares_solution():
    rng = np.random.default_rng(0)
    weights = sp.random(30, 12, density=0.3, random_state=1, format="csr", data_rvs=lambda n: rng.uniform(0.5, 2, n))
    items = rng.normal(size=(12, 4))
    reg, alpha = 0.7, 5.0
    got = fold_in(weights, items, reg, alpha)
    dense = weights.toarray()
    for u in range(30):
        c = 1.0 + alpha * dense[u]
        p = (dense[u] > 0).astype(float)
        expected = np.linalg.solve(items.T @ (c[:, None] * items) + reg * np.eye(4), items.T @ (c * p))
        np.testing.assert_allclose(got[u], expected, rtol=1e-10, atol=1e-12)


def test_loss_equals_the_dense_objective():
    rng = np.random.default_rng(1)
    weights = sp.random(25, 15, density=0.2, random_state=2, format="csr", data_rvs=lambda n: rng.uniform(0.5, 2, n))
    users, items = rng.normal(size=(25, 3)), rng.normal(size=(15, 3))
    dense = weights.toarray()
    c, p, s = 1.0 + 4.0 * dense, (dense > 0).astype(float), users @ items.T
    expected = np.sum(c * (p - s) ** 2) + 0.3 * (np.sum(users**2) + np.sum(items**2))
    assert implicit_loss(weights, users, items, reg=0.3, alpha=4.0) == pytest.approx(expected, rel=1e-12)


def test_objective_never_increases_over_iterations(grouped):
    _, model = grouped
    assert len(model.loss_) == 12
    assert all(later <= earlier * (1 + 1e-12) for earlier, later in zip(model.loss_, model.loss_[1:]))
    assert model.loss_[-1] < model.loss_[0]


def test_same_seed_same_vectors_other_seed_other_vectors(grouped):
    interactions, model = grouped
    again = als(seed=3).fit(interactions.matrix)
    np.testing.assert_array_equal(again.user_factors_, model.user_factors_)
    np.testing.assert_array_equal(again.item_factors_, model.item_factors_)
    other = als(seed=4).fit(interactions.matrix)
    assert not np.allclose(other.item_factors_, model.item_factors_)


def test_folding_in_a_trained_user_reproduces_the_trained_vector(grouped):
    interactions, model = grouped
    rows = interactions.matrix[[0, 57, 121]]
    folded = fold_in(rows, model.item_factors_, reg=0.5, alpha=10.0)
    np.testing.assert_allclose(folded, model.user_factors_[[0, 57, 121]], rtol=1e-9, atol=1e-12)


def test_trained_users_rank_their_own_group_first(grouped):
    interactions, model = grouped
    scores = model.scores(model.user_factors_)
    top = np.argsort(-scores, axis=1)[:, :ITEMS_PER_GROUP]
    item_group = (interactions.item_ids - 100) // ITEMS_PER_GROUP
    user_group = interactions.user_ids // USERS_PER_GROUP
    share_in_group = (item_group[top] == user_group[:, None]).mean()
    assert share_in_group > 0.95


def test_a_new_user_gets_the_items_of_their_taste(grouped):
    interactions, model = grouped
    new = events([("page_view", 999, 121), ("purchase", 999, 121), ("page_view", 999, 124)])  # group 2 items
    row = interaction_matrix(new, item_ids=interactions.item_ids)
    (vector,) = fold_in(row.matrix, model.item_factors_, reg=0.5, alpha=10.0)
    scores = model.scores(vector[None, :])[0]
    ranked = interactions.item_ids[np.argsort(-scores)]
    assert set(ranked[:2]) == {121, 124}  # what they touched ranks first
    # the untouched items of group 2 score far above every other group's items, on average
    group = (interactions.item_ids - 100) // ITEMS_PER_GROUP
    untouched = ~np.isin(interactions.item_ids, [121, 124])
    means = [scores[(group == g) & untouched].mean() for g in range(GROUPS)]
    assert np.argmax(means) == 2 and means[2] > 10 * max(abs(m) for g, m in enumerate(means) if g != 2)


def test_a_user_without_interactions_folds_in_to_zero(grouped):
    _, model = grouped
    empty = sp.csr_matrix((1, model.item_factors_.shape[0]))
    np.testing.assert_array_equal(fold_in(empty, model.item_factors_, reg=0.5, alpha=10.0), np.zeros((1, 8)))


def test_fold_in_of_active_users_counts_what_it_cannot_use(grouped):
    interactions, model = grouped
    later = events(
        [("page_view", 3, 101), ("page_view", 3, 555), ("page_view", 777, 555), ("promo_exposure", 5, None)],
        start=T0 + pd.Timedelta(days=10),
    )
    history = pd.concat([grouped_events(), later], ignore_index=True)
    assert grouped_events()["ts"].max() < T0 + pd.Timedelta(days=5)
    users = active_users(history, since=T0 + pd.Timedelta(days=5))
    assert list(users) == [3, 777]  # an exposure is not an item interaction
    folded = fold_in_users(history, users, interactions.item_ids, model.item_factors_, reg=0.5, alpha=10.0)
    assert list(folded.user_ids) == [3]  # user 777 touched only an item without a vector
    assert folded.events_on_unknown_items == 2 and folded.users_without_known_items == 1
    whole_history = interaction_matrix(history[history["user_id"] == 3], item_ids=interactions.item_ids)
    np.testing.assert_allclose(folded.vectors, fold_in(whole_history.matrix, model.item_factors_, 0.5, 10.0))
    assert not np.allclose(folded.vectors[0], model.user_factors_[3])  # the new view moved the vector


def test_invalid_settings_and_unfitted_use_are_refused():
    with pytest.raises(ValueError, match="iterations and factors must be >= 1"):
        ImplicitALS(iterations=0).fit(sp.csr_matrix(np.ones((2, 2))))
    with pytest.raises(ValueError, match="interaction weights must be > 0"):
        ImplicitALS().fit(sp.csr_matrix(np.array([[1.0, -1.0]])))
    with pytest.raises(RuntimeError, match="not fitted"):
        ImplicitALS().scores(np.zeros((1, 16)))
    with pytest.raises(ValueError, match="weights have 3 columns but there are 2 fixed vectors"):
        fold_in(sp.csr_matrix((1, 3)), np.zeros((2, 4)), reg=1.0, alpha=1.0)
