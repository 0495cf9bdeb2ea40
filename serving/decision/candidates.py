"""Candidate generation: the top-k items by inner product x_uᵀ y_i, through an HNSW index over item vectors.

The index (faiss `IndexHNSWFlat`, inner-product metric) answers in a few µs whatever the catalogue size; exact
search (one matrix–vector product) is kept beside it as the reference its recall is measured against. An index is
saved as two files in one folder: the item vectors (parquet, the table serving and analysts read) and the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import hashlib
import logging
import shutil
from datetime import datetime, timezone

import faiss
import numpy as np
import pandas as pd

from feature_repo.embeddings import EMBEDDING_FEATURES
from serving.store.features import FeatureClient

log = logging.getLogger(__name__)

ITEM_VECTORS_FILE = "item_vectors.parquet"
INDEX_FILE = "item_index.faiss"
CURRENT_FILE = "CURRENT"  # names the version `load(root)` serves
VERSIONS_DIR = "versions"
KEPT_VERSIONS = 3  # published versions kept on disk (the newest, and two a slow reader may still be loading)
POPULARITY_COLUMN = "popularity"
MISSING_INDEX_HINT = "materialize the item_user_embeddings asset to build the item index"


@dataclass(frozen=True)
class HnswParams:
    """Graph degree M, candidate list size while building, and while searching (recall grows with ef_search)."""

    m: int = 32
    ef_construction: int = 200
    ef_search: int = 128


class ItemIndex:
    """Item ids and vectors with an HNSW graph over them; `top_k` is approximate, `exact_top_k` is exact."""

    def __init__(
        self, item_ids: np.ndarray, vectors: np.ndarray, graph: faiss.Index, ef_search: int,
        popularity: np.ndarray | None = None, version: str | None = None,
    ):
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or len(self.vectors) != len(self.item_ids):
            raise ValueError(f"{len(self.item_ids)} item ids for item vectors of shape {self.vectors.shape}")
        if graph.ntotal != len(self.item_ids) or graph.d != self.vectors.shape[1]:
            raise ValueError(f"index holds {graph.ntotal} vectors of d={graph.d}; expected {self.vectors.shape}")
        if popularity is not None and len(popularity) != len(self.item_ids):
            raise ValueError(f"{len(popularity)} popularity values for {len(self.item_ids)} items")
        self.popularity = None if popularity is None else np.asarray(popularity, dtype=np.float64)
        self.version = version  # the published version it was loaded from (None: built in memory or unversioned)
        self.graph = graph
        self.ef_search = ef_search
        self._search_params = faiss.SearchParametersHNSW(efSearch=ef_search)  # built once: ~5 µs per call saved
        self._wider: dict[int, faiss.SearchParametersHNSW] = {}  # ef_search = k for each k > ef_search asked

    @classmethod
    def build(
        cls, item_ids: np.ndarray, vectors: np.ndarray, params: HnswParams = HnswParams(),
        popularity: np.ndarray | None = None,
    ) -> "ItemIndex":
        """Build the HNSW graph over `vectors` (one row per item of `item_ids`; `popularity` per item, if known)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        graph = faiss.IndexHNSWFlat(vectors.shape[1], params.m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = params.ef_construction
        graph.add(vectors)
        return cls(item_ids, vectors, graph, params.ef_search, popularity)

    def with_ef_search(self, ef_search: int) -> "ItemIndex":
        """The same items and graph searched with another ef_search (the graph is shared, not copied)."""
        return ItemIndex(self.item_ids, self.vectors, self.graph, ef_search, self.popularity, self.version)

    def most_popular(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k most popular items (ties by position): (item ids, popularity); needs the popularity column."""
        if self.popularity is None:
            raise ValueError(f"the item index (version {self.version}) has no popularity column; {MISSING_INDEX_HINT}")
        order = np.argsort(-self.popularity, kind="stable")[: self._k(k)]
        return self.item_ids[order], self.popularity[order]

    @property
    def dim(self) -> int:
        """Components of every vector."""
        return self.vectors.shape[1]

    def _k(self, k: int) -> int:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return min(k, len(self.item_ids))

    def _queries(self, user_vectors: np.ndarray) -> np.ndarray:
        queries = np.ascontiguousarray(np.atleast_2d(user_vectors), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise ValueError(f"user vectors have {queries.shape[1]} components; the item vectors have {self.dim}")
        return queries

    def search(self, user_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k positions and scores per query row, shape (n, min(k, items)); best first."""
        k = self._k(k)
        params = self._search_params if k <= self.ef_search else self._wider_search(k)
        scores, positions = self.graph.search(self._queries(user_vectors), k, params=params)
        return positions, scores

    def _wider_search(self, k: int) -> faiss.SearchParametersHNSW:
        """HNSW needs ef_search >= k to return k items: the parameters for k, built once per k."""
        params = self._wider.get(k)
        if params is None:
            params = self._wider[k] = faiss.SearchParametersHNSW(efSearch=k)
        return params

    def exact_search(self, user_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k positions and scores per query row (ties broken by position); best first."""
        k = self._k(k)
        scores = self._queries(user_vectors) @ self.vectors.T
        if k < scores.shape[1]:
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            part.sort(axis=1)  # by position, so that the stable sort below breaks ties by position
        else:
            part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
        rows = np.arange(len(scores))[:, None]  # plain fancy indexing: take_along_axis costs ~7 µs a call
        part_scores = scores[rows, part]
        order = np.argsort(-part_scores, axis=1, kind="stable")
        return part[rows, order], part_scores[rows, order]

    def top_k(self, user_vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ANN's k best items for one user vector: (item ids, inner products), best first."""
        positions, scores = self.search(user_vector, k)
        found = positions[0] >= 0  # HNSW pads with -1 when it reaches fewer than k items
        return self.item_ids[positions[0][found]], scores[0][found]

    def exact_top_k(self, user_vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The exact k best items for one user vector: (item ids, inner products), best first."""
        positions, scores = self.exact_search(user_vector, k)
        return self.item_ids[positions[0]], scores[0]

    def save(self, directory: Path) -> Path:
        """Write the item vectors and the graph under `directory` (each atomically); returns the folder."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        table = pd.DataFrame(self.vectors, columns=[f"emb_{k}" for k in range(self.dim)])
        table.insert(0, "item_id", self.item_ids)
        if self.popularity is not None:
            table[POPULARITY_COLUMN] = self.popularity
        table.to_parquet(directory / f"{ITEM_VECTORS_FILE}.tmp", index=False)
        faiss.write_index(self.graph, str(directory / f"{INDEX_FILE}.tmp"))
        (directory / f"{ITEM_VECTORS_FILE}.tmp").replace(directory / ITEM_VECTORS_FILE)
        (directory / f"{INDEX_FILE}.tmp").replace(directory / INDEX_FILE)
        return directory

    def publish(self, root: Path, now: datetime | None = None) -> str:
        """Save as a new version under `root/versions/` and point `root/CURRENT` at it (atomically); prune all but
        the newest KEPT_VERSIONS versions. Returns the version: UTC time of publishing + a digest of the contents."""
        root = Path(root)
        stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%S%fZ")
        digest = hashlib.sha256(self.item_ids.tobytes() + self.vectors.tobytes()).hexdigest()[:8]
        version = f"{stamp}-{digest}"
        folder = root / VERSIONS_DIR / version
        staging = root / VERSIONS_DIR / f".{version}.tmp"  # dot-folders are never a version
        self.save(staging)
        staging.replace(folder)
        pointer = root / f".{CURRENT_FILE}.tmp"
        pointer.write_text(version + "\n")
        pointer.replace(root / CURRENT_FILE)
        for old in published_versions(root)[:-KEPT_VERSIONS]:
            try:  # a reader that already opened the old files keeps reading them (POSIX)
                shutil.rmtree(root / VERSIONS_DIR / old)
            except OSError as exc:  # the new version is published; an old one left behind is pruned next time
                log.warning("could not prune item index version %s under %s: %s", old, root, exc)
        self.version = version
        return version

    @classmethod
    def load(cls, directory: Path, ef_search: int = HnswParams.ef_search) -> "ItemIndex":
        """Read the version `directory/CURRENT` names, else an index `save` wrote into `directory`; says which asset
        writes it when it is missing."""
        directory = Path(directory)
        version = current_version(directory)
        folder = directory if version is None else directory / VERSIONS_DIR / version
        missing = [name for name in (ITEM_VECTORS_FILE, INDEX_FILE) if not (folder / name).exists()]
        if missing:
            raise FileNotFoundError(f"{folder} lacks {missing}; {MISSING_INDEX_HINT}")
        table = pd.read_parquet(folder / ITEM_VECTORS_FILE)
        vectors = table[[c for c in table.columns if c.startswith("emb_")]].to_numpy(np.float32)
        popularity = table[POPULARITY_COLUMN].to_numpy() if POPULARITY_COLUMN in table.columns else None
        graph = faiss.read_index(str(folder / INDEX_FILE))
        return cls(table["item_id"].to_numpy(), vectors, graph, ef_search, popularity, version)


def current_version(root: Path) -> str | None:
    """The version `root/CURRENT` names (None when `root` holds no published version)."""
    pointer = Path(root) / CURRENT_FILE
    try:
        return pointer.read_text().strip() or None
    except FileNotFoundError:
        return None


def published_versions(root: Path) -> list[str]:
    """Versions under `root/versions/`, oldest first (their names start with the UTC time of publishing)."""
    folder = Path(root) / VERSIONS_DIR
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def recall_at_k(index: ItemIndex, user_vectors: np.ndarray, k: int, batch: int = 256) -> float:
    """Mean share of the exact top-k items that the ANN also returns in its top k."""
    hits = total = 0
    for lo in range(0, len(user_vectors), batch):  # batches bound the (queries × items) score matrix
        approx, _ = index.search(user_vectors[lo : lo + batch], k)
        exact, _ = index.exact_search(user_vectors[lo : lo + batch], k)
        hits += sum(len(np.intersect1d(a[a >= 0], e)) for a, e in zip(approx, exact))
        total += exact.size
    return hits / total


def user_vector(features: FeatureClient, user_id: int) -> np.ndarray | None:
    """The user's embedding from the online store (a client of feature service `candidates_v1`); None if unknown."""
    read = features.read(user_id, list(EMBEDDING_FEATURES))
    if not read.found or np.isnan(read.values).any():
        return None
    return read.values

