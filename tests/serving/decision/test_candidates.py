"""The item index: exact search is exact, the HNSW graph finds the exact top-k, files round-trip, bad input fails."""

import faiss
import numpy as np
import pytest

from serving.decision.candidates import HnswParams, ItemIndex, current_version, published_versions, recall_at_k

D = 16


@pytest.fixture(scope="module")
def catalogue():
    """5,000 items with ids 1000.., Gaussian vectors, and an index over them."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(5000, D)).astype(np.float32)
    item_ids = np.arange(1000, 6000)
    return item_ids, vectors, ItemIndex.build(item_ids, vectors)


def test_exact_top_k_is_the_brute_force_ranking(catalogue):
    item_ids, vectors, index = catalogue
    user = np.random.default_rng(1).normal(size=D)
    ids, scores = index.exact_top_k(user, 50)
    brute = vectors @ user.astype(np.float32)
    order = np.argsort(-brute, kind="stable")[:50]
    np.testing.assert_array_equal(ids, item_ids[order])
    np.testing.assert_allclose(scores, brute[order], rtol=1e-5)


def test_exact_ties_are_broken_by_position():
    vectors = np.array([[1.0, 0.0], [2.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    index = ItemIndex.build(np.array([50, 40, 30, 20, 10]), vectors)
    ids, scores = index.exact_top_k(np.array([1.0, 0.0]), 4)
    assert list(ids) == [40, 20, 50, 30] and list(scores) == [2.0, 2.0, 1.0, 1.0]


def test_ann_returns_item_ids_with_their_inner_products_best_first(catalogue):
    item_ids, vectors, index = catalogue
    user = np.random.default_rng(2).normal(size=D).astype(np.float32)
    ids, scores = index.top_k(user, 20)
    assert len(ids) == 20 and len(set(ids)) == 20 and set(ids) <= set(item_ids)
    np.testing.assert_allclose(scores, vectors[ids - 1000] @ user, rtol=1e-4)
    assert np.all(np.diff(scores) <= 0)


def test_ann_recall_at_50_against_exact_search(catalogue):
    _, _, index = catalogue
    users = np.random.default_rng(3).normal(size=(300, D))
    assert recall_at_k(index, users, 50) >= 0.97


def test_recall_is_one_for_an_exact_graph_and_zero_for_one_that_ranks_backwards(catalogue):
    item_ids, vectors, _ = catalogue
    users = np.random.default_rng(4).normal(size=(20, D))
    exact = faiss.IndexFlatIP(D)
    exact.add(vectors)
    assert recall_at_k(ItemIndex(item_ids, vectors, exact, ef_search=64), users, 50) == 1.0
    backwards = faiss.IndexFlatIP(D)
    backwards.add(-vectors)  # returns the 50 lowest inner products
    assert recall_at_k(ItemIndex(item_ids, vectors, backwards, ef_search=64), users, 50) == 0.0


def test_k_beyond_the_catalogue_returns_every_item_once():
    rng = np.random.default_rng(5)
    index = ItemIndex.build(np.arange(30), rng.normal(size=(30, 4)))
    ids, scores = index.top_k(rng.normal(size=4), 100)
    assert sorted(ids) == list(range(30)) and len(scores) == 30
    exact_ids, _ = index.exact_top_k(rng.normal(size=4), 100)
    assert sorted(exact_ids) == list(range(30))


def test_saved_index_loads_and_answers_the_same(catalogue, tmp_path):
    item_ids, vectors, index = catalogue
    folder = index.save(tmp_path / "items")
    loaded = ItemIndex.load(folder, ef_search=64)
    np.testing.assert_array_equal(loaded.item_ids, item_ids)
    np.testing.assert_array_equal(loaded.vectors, vectors)
    assert loaded.ef_search == 64 and loaded.graph.ntotal == 5000
    user = np.random.default_rng(6).normal(size=D)
    same_search = ItemIndex(item_ids, vectors, index.graph, ef_search=64)
    np.testing.assert_array_equal(loaded.top_k(user, 30)[0], same_search.top_k(user, 30)[0])
    assert ItemIndex.load(folder).ef_search == HnswParams.ef_search
    assert sorted(p.name for p in folder.iterdir()) == ["item_index.faiss", "item_vectors.parquet"]


def test_missing_files_and_wrong_shapes_are_refused(catalogue, tmp_path):
    item_ids, vectors, index = catalogue
    with pytest.raises(FileNotFoundError, match=r"lacks \['item_vectors.parquet', 'item_index.faiss'\]; materialize"):
        ItemIndex.load(tmp_path / "nothing")
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        index.top_k(np.zeros(D), 0)
    with pytest.raises(ValueError, match="user vectors have 8 components; the item vectors have 16"):
        index.top_k(np.zeros(8), 5)
    with pytest.raises(ValueError, match="index holds 5000 vectors of d=16; expected"):
        ItemIndex(item_ids[:10], vectors[:10], index.graph, ef_search=10)
    with pytest.raises(ValueError, match="10 item ids for item vectors of shape"):
        ItemIndex(item_ids[:10], vectors[:20], index.graph, ef_search=10)


def test_published_versions_are_served_newest_first_kept_three_and_carry_popularity(tmp_path):
    rng = np.random.default_rng(7)
    versions = []
    for n in range(4):
        popularity = rng.random(30)
        index = ItemIndex.build(np.arange(30), rng.normal(size=(30, 4)), popularity=popularity)
        versions.append(index.publish(tmp_path / "items"))
        loaded = ItemIndex.load(tmp_path / "items")
        assert loaded.version == versions[-1] and current_version(tmp_path / "items") == versions[-1]
        np.testing.assert_array_equal(loaded.popularity, popularity)
        np.testing.assert_array_equal(loaded.vectors, index.vectors)
    assert published_versions(tmp_path / "items") == versions[1:]  # oldest pruned
    top, values = loaded.most_popular(3)
    assert list(values) == sorted(popularity, reverse=True)[:3] and list(top) == list(np.argsort(-popularity)[:3])


def test_an_unversioned_folder_loads_as_before_and_has_no_popular_items(catalogue, tmp_path):
    item_ids, vectors, index = catalogue
    loaded = ItemIndex.load(index.save(tmp_path / "flat"))
    assert loaded.version is None and loaded.popularity is None
    with pytest.raises(ValueError, match="has no popularity column; materialize the item_user_embeddings asset"):
        loaded.most_popular(5)
