"""ANN candidate generation: recall@50 against exact search, µs per query and index build time.

    .venv/bin/python -m bench.ann_candidates [--items 200000] [--dim 64] [--queries 2000] [--write]

Two catalogues: the demo shop's (the item index and user vectors `make demo` wrote under HYPERLIFT_HOME), and a
synthetic one of `--items` clustered vectors of `--dim` components, where exact search grows with the catalogue
and the HNSW graph does not. Queries run one at a time, as serving asks them. The embeddings' own quality on the
demo shop (items of the last 6 days recalled at 20 by vectors trained on the days before) is printed too. With
`--write`, the printed section replaces its namesake in docs/benchmarks.md (appended the first time).
"""

from __future__ import annotations

import argparse
import os
import textwrap
import time

import dagster as dg
import numpy as np
import pandas as pd

from bench.report import DOCS, write_section
from dagster_project.resources.data_lake import ITEM_INDEX_DIR, USER_EMBEDDING, VALIDATED_EVENTS
from feature_repo.embeddings import user_vectors
from feature_repo.pseudonyms import lake_pseudonymizer, raw_ids
from infra import keys
from infra.settings import HyperliftSettings
from serving.decision.candidates import HnswParams, ItemIndex, recall_at_k
from simulator import ShopConfig, build_shop
from simulator.choice import choice_probabilities
from training.embeddings import ImplicitALS, interaction_matrix

K = 50
EMBEDDING_STEPS = ("item_user_embeddings", "user_embeddings_refresh", "online_user_embeddings")
EF_SEARCH = (32, 64, 128, 256, 512)
HEADING = "## Embeddings and ANN candidate generation (`.venv/bin/python -m bench.ann_candidates --write`)"


def per_query_us(search, queries: np.ndarray) -> np.ndarray:
    """Wall time of `search(query)` for each query row, in µs, after a warm-up pass over 50 queries."""
    for query in queries[:50]:
        search(query)
    out = np.empty(len(queries))
    for i, query in enumerate(queries):
        started = time.perf_counter_ns()
        search(query)
        out[i] = (time.perf_counter_ns() - started) / 1e3
    return out


def score_share(index: ItemIndex, queries: np.ndarray) -> float:
    """Mean over queries of Σ inner products of the ANN's top K / Σ of the exact top K (1.0: as good as exact)."""
    _, approx = index.search(queries, K)
    _, exact = index.exact_search(queries, K)
    return float(np.mean(approx.sum(axis=1) / exact.sum(axis=1)))


def measure(item_ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray) -> dict:
    """Build time, then recall@K, score share and µs per query of the ANN at each ef_search, and of exact search."""
    started = time.perf_counter()
    index = ItemIndex.build(item_ids, vectors, HnswParams())
    out: dict = {"items": len(item_ids), "dim": vectors.shape[1], "build_s": time.perf_counter() - started, "ann": {}}
    for ef in EF_SEARCH:
        tuned = ItemIndex(index.item_ids, index.vectors, index.graph, ef_search=ef)
        out["ann"][ef] = {
            "recall": recall_at_k(tuned, queries, K),
            "score_share": score_share(tuned, queries[:256]),
            "us": per_query_us(lambda q: tuned.top_k(q, K), queries),
        }
    out["exact_us"] = per_query_us(lambda q: index.exact_top_k(q, K), queries)
    return out


def clustered(n_items: int, dim: int, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Items around 256 centres with log-normal norms (popularity); users mixing 1-3 centres, plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(256, dim)) / np.sqrt(dim)
    items = centres[rng.integers(256, size=n_items)] + 0.5 * rng.normal(size=(n_items, dim)) / np.sqrt(dim)
    items *= rng.lognormal(0.0, 0.3, size=(n_items, 1))
    mix = rng.dirichlet(np.full(256, 0.01), size=n_queries)
    users = mix @ centres + 0.3 * rng.normal(size=(n_queries, dim)) / np.sqrt(dim)
    return items.astype(np.float32), users.astype(np.float32)


def demo_catalogue(settings: HyperliftSettings, n_queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The demo's item ids and vectors, a sample of its users' newest vectors, and how many users it has."""
    index = ItemIndex.load(settings.data_dir / ITEM_INDEX_DIR)
    table = pd.read_parquet(settings.data_dir / USER_EMBEDDING)
    newest = table.sort_values("event_timestamp").groupby("user_id").tail(1)
    sample = newest.sample(min(n_queries, len(newest)), random_state=0)
    return index.item_ids, index.vectors, user_vectors(sample), len(newest)


def embedding_quality(settings: HyperliftSettings, shop_config: ShopConfig, holdout_days: int = 6, k: int = 20) -> dict:
    """Recall@k of the items each user touches in the last `holdout_days`, ranked by ALS (fitted on the days
    before), by popularity, and by the simulator's true P(i | u) (of the raw ids behind the validated events'
    pseudonyms); users sampled: 3,000 with held-out items."""
    events = pd.read_parquet(settings.data_dir / VALIDATED_EVENTS, columns=["event_type", "ts", "user_id", "item_id"])
    cut = pd.Timestamp(shop_config.end) - pd.Timedelta(days=holdout_days)
    train = interaction_matrix(events[events["ts"] < cut])
    later = interaction_matrix(events[events["ts"] >= cut], item_ids=train.item_ids)
    rows = pd.Index(train.user_ids).get_indexer(later.user_ids)
    rng = np.random.default_rng(0)
    pick = rng.choice(np.flatnonzero(rows >= 0), size=min(3000, int((rows >= 0).sum())), replace=False)
    truth = [set(later.matrix[i].indices) for i in pick]
    started = time.perf_counter()
    model = ImplicitALS().fit(train.matrix)
    fit_s = time.perf_counter() - started
    shop = build_shop(shop_config)
    keyed_by = lake_pseudonymizer(create=False, path=keys.key_file(settings))
    users = raw_ids(later.user_ids[pick], shop.users["user_id"], keyed_by)
    items = shop.items.set_index("item_id").loc[train.item_ids]
    rankers = {
        "ALS (ImplicitALS defaults)": model.scores(model.user_factors_[rows[pick]]),
        "popularity": np.tile(np.asarray(train.matrix.sum(axis=0)).ravel(), (len(pick), 1)),
        r"simulator's true P(i \| u)": choice_probabilities(
            shop.price_sensitivity[users], shop.taste[users], items["category_id"].to_numpy(), items["price"].to_numpy()
        ),
    }
    recall = {}
    for name, scores in rankers.items():
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        recall[name] = float(np.mean([len(t & set(row)) / min(k, len(t)) for t, row in zip(truth, top)]))
    return {"k": k, "holdout_days": holdout_days, "users": len(pick), "fit_s": fit_s, "recall": recall,
            "train_shape": train.matrix.shape, "nnz": train.matrix.nnz, "params": model.get_params()}


def pipeline_share(settings: HyperliftSettings) -> dict | None:
    """Seconds of the embedding steps in the newest successful hyperlift_job run of this home, and of the run."""
    home = settings.resolved_dagster_home
    if not (home / "dagster.yaml").exists():
        return None
    instance = dg.DagsterInstance.from_config(str(home))
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name="hyperlift_job", statuses=[dg.DagsterRunStatus.SUCCESS]), limit=1
    )
    if not runs:
        return None
    steps = {s.step_key: s.end_time - s.start_time for s in instance.get_run_step_stats(runs[0].run_id)}
    run = instance.get_run_stats(runs[0].run_id)
    return {
        "steps": {name: steps[name] for name in EMBEDDING_STEPS if name in steps},
        "run_s": run.end_time - run.start_time, "step_sum_s": sum(steps.values()),
    }


def _row(name: str, result: dict) -> list[str]:
    exact = result["exact_us"]
    p50, p99 = np.percentile(exact, [50, 99])
    lines = [f"| {name} | exact (numpy) | 1.000 | 1.0000 | {p50:.0f} | {p99:.0f} | |"]
    for ef, ann in result["ann"].items():
        lines.append(
            f"| {name} | HNSW ef_search={ef} | {ann['recall']:.3f} | {ann['score_share']:.4f} | "
            f"{np.percentile(ann['us'], 50):.0f} | {np.percentile(ann['us'], 99):.0f} | {result['build_s']:.2f} |"
        )
    return lines


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=115, break_on_hyphens=False)


def markdown(
    demo: dict | None, synthetic: dict, quality: dict | None, pipeline: dict | None, n_queries: int, demo_users: int
) -> str:
    """The benchmark section."""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    intro = (
        "Run after `make demo` (it reads the demo's state from HYPERLIFT_HOME). "
        f"HNSW graph (faiss `IndexHNSWFlat`, inner product, M={HnswParams.m}, ef_construction="
        f"{HnswParams.ef_construction}) against exact search (one float32 matrix–vector product + partial sort), "
        f"top-{K} by inner product; {n_queries:,} queries answered one at a time (µs measured around each call, "
        "after a warm-up); build = graph construction on both cores. Serving's default is ef_search="
        f"{HnswParams.ef_search}. Score share = Σ inner products of the ANN's top 50 / Σ of the exact top 50 "
        "(mean over 256 queries): how much of the exact ranking's score the misses cost. Load average when "
        f"written: {load} (1, 5, 15 min; other processes on the 2 cores inflate µs and build time)."
    )
    lines = [
        HEADING, "", _wrap(intro), "",
        "| catalogue | search | recall@50 vs exact | score share | p50 µs/query | p99 µs/query | index build s |",
        "|---|---|---|---|---|---|---|",
    ]
    if demo is not None:
        lines += _row(f"demo shop: {demo['items']} items × d={demo['dim']}", demo)
    lines += _row(f"synthetic: {synthetic['items']:,} items × d={synthetic['dim']}", synthetic)
    lines.append("")
    if demo is not None:
        lines.append(_wrap(
            f"Demo queries are the newest vectors of {n_queries:,} of the {demo_users:,} users in "
            "`features/user_embedding.parquet`; the synthetic catalogue has 256 clusters with log-normal norms "
            "(`bench.ann_candidates.clustered`)."
        ))
    if pipeline is not None:
        steps = ", ".join(f"`{name}` {seconds:.1f} s" for name, seconds in pipeline["steps"].items())
        lines += ["", _wrap(
            f"Cost in the pipeline (newest successful `hyperlift_job` run of this home; the in-process executor runs "
            f"steps one after another): {steps}; {sum(pipeline['steps'].values()):.1f} s of the run's "
            f"{pipeline['run_s']:.1f} s."
        )]
    if quality is not None:
        shape = quality["train_shape"]
        lines += [
            "",
            _wrap(
                f"Quality of the embeddings on the demo shop: ALS fitted on all but the last "
                f"{quality['holdout_days']} days ({shape[0]:,} users × {shape[1]} items, {quality['nnz']:,} pairs, "
                f"{quality['fit_s']:.1f} s, params {quality['params']}); recall@{quality['k']} of the items each of "
                f"{quality['users']:,} users touched in the last {quality['holdout_days']} days:"
            ), "",
            "| ranking | recall@20 of held-out items |", "|---|---|",
            *(f"| {name} | {value:.3f} |" for name, value in quality["recall"].items()),
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Measure both catalogues and the embeddings' quality; print the markdown section (and write it)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--write", action="store_true", help="write the section into docs/benchmarks.md")
    args = parser.parse_args()
    settings = HyperliftSettings()
    demo = quality = pipeline = None
    demo_users = 0
    if (settings.data_dir / ITEM_INDEX_DIR).exists():
        item_ids, vectors, queries, demo_users = demo_catalogue(settings, args.queries)
        demo = measure(item_ids, vectors, queries)
        quality = embedding_quality(settings, ShopConfig.from_env())
        pipeline = pipeline_share(settings)
    else:
        print(f"no item index under {settings.data_dir}: run `make demo` first for the demo shop's figures")
    items, users = clustered(args.items, args.dim, args.queries)
    synthetic = measure(np.arange(args.items), items, users)
    section = markdown(demo, synthetic, quality, pipeline, args.queries, demo_users)
    print(section)
    if args.write:
        write_section(HEADING, section)
        print(f"wrote the section to {DOCS}")


if __name__ == "__main__":
    main()
