"""The item surface (candidates from embeddings): recall@k of the ANN against exact search, the latency it adds per
decision through the real HTTP service next to a fixed-candidate surface, and the value of its slates from the
simulator's ground truth.

Run after `make demo` (reads its item index, user vectors, Redis dump, champion and validated events):
    .venv/bin/python -m bench.item_surface [--rate 500] [--seconds 10] [--repeats 3] [--value-users 3000] [--write]

1. Recall@k (k = 50, 200) of the HNSW index (ef_search = serving's default, raised to k when k is larger) against
   exact search, on the demo's item index with its users' newest vectors, and on a synthetic catalogue of
   `--items` clustered vectors of the embedding's dimension (bench.ann_candidates.clustered); µs per query too.
2. Latency: one uvicorn worker serving four surfaces from the same Redis: `fixed` (the shipped `home` surface:
   the demo champion's fixed list of actions, its caps and budgets), `items_k50`, `items_k200` (the shipped
   `recommended_items` surface at k = 50 and 200: vector, profile, consent and item caps in one round trip,
   ANN top-k, regional rules and consent, eligibility, softmax slate of 5, reservation) and `items_k200_top50`
   (k = 200, `rank_top: 50`: only the best 50 eligible items are drawn from and logged). Open-loop runs at
   --rate, interleaved (each surface in turn, repeated --repeats times), latency from each request's due time;
   added latency = item surface − fixed surface,
   p50 and p99 of the runs with the median p99. The index is a versioned copy of the demo's (with popularity from
   the validated events, as the item_user_embeddings asset now writes it) in a temporary folder. The bench deletes
   its decision records from the demo's stream afterwards.
3. Value: for --value-users users drawn at random, one decision each through the same service with the item caps
   cleared, and the simulator's exact expected incremental revenue (simulator.item_truth) of the slate served,
   of the 5 most popular items (the fallback's slate), of the top 5 by exact inner product, and of the oracle's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import redis
import yaml

from bench.ann_candidates import clustered, per_query_us
from bench.decision_latency import start
from bench.decision_load import last_id, median_run, traces_since, tree_cpu_s, write_policy_dir
from bench.loadgen import LoadResult, encode_post, run_load
from bench.report import DOCS, machine_line, write_section
from dagster_project.resources.data_lake import ITEM_INDEX_DIR, USER_EMBEDDING, VALIDATED_EVENTS
from feature_repo.embeddings import EMBEDDING_DIM, user_vectors
from feature_repo.pseudonyms import with_raw_ids
from infra import keys
from infra.launch import project_environment
from infra.redis_server import free_port
from infra.settings import HyperliftSettings
from serving.api.connection_limits import UVICORN_OPTIONS
from serving.decision.candidates import HnswParams, ItemIndex, recall_at_k
from serving.decision.items import item_of
from serving.decision.surfaces import DEFAULT_CONFIG_DIR
from serving.store.decision_log import DECISION_STREAM
from simulator import ShopConfig, build_shop
from simulator.item_truth import NO_ITEM, item_slate_values, oracle_item_slates
from simulator.response import expected_revenue
from training.embeddings import interaction_matrix

VENV_BIN = Path(sys.executable).parent
KS = (50, 200)
SLATE = 5
RANK_TOP = 50
SURFACES = ("fixed", "items_k50", "items_k200", f"items_k200_top{RANK_TOP}")
HEADING = "## Item surface: candidates from embeddings (`.venv/bin/python -m bench.item_surface --write`)"
BENCH_PREFIX = "bench_item_surface_"
BENCH_DEADLINES = {"features_ms": 50, "scoring_ms": 50, "total_ms": 200}  # as bench.decision_load: no deadline fallback


def demo_index(settings: HyperliftSettings) -> ItemIndex:
    """The demo's item index with each item's popularity (column sums of the interaction weights of the validated
    events: what item_user_embeddings stores with the vectors), whatever version the demo wrote."""
    index = ItemIndex.load(settings.data_dir / ITEM_INDEX_DIR)
    if index.popularity is None:
        columns = ["event_type", "ts", "user_id", "item_id"]
        events = pd.read_parquet(settings.data_dir / VALIDATED_EVENTS, columns=columns)
        matrix = interaction_matrix(events, item_ids=index.item_ids).matrix
        index = ItemIndex(index.item_ids, index.vectors, index.graph, index.ef_search,
                          np.asarray(matrix.sum(axis=0), dtype=np.float64).ravel(), index.version)
    return index


def newest_user_vectors(settings: HyperliftSettings, known: pd.Series) -> pd.DataFrame:
    """Each user's newest vector row, indexed by raw id (the lake's pseudonyms mapped back among the shop's `known`
    users): the ids the requests carry and the simulator's truth is indexed by."""
    table = pd.read_parquet(settings.data_dir / USER_EMBEDDING)
    newest = table.sort_values("event_timestamp").groupby("user_id").tail(1)
    return with_raw_ids(newest, known, keys.key_file(settings)).set_index("user_id").sort_index()


def recall_rows(label: str, index: ItemIndex, queries: np.ndarray) -> list[str]:
    """Recall@k and µs per query (ANN and exact): k = 50 at serving's ef_search, k = 200 at ef_search = k (what
    the service uses when k exceeds the surface's ef_search) and at 2k (a surface that sets ef_search: 400)."""
    rows = []
    for k, ef in ((KS[0], index.ef_search), (KS[1], KS[1]), (KS[1], 2 * KS[1])):
        tuned = index.with_ef_search(ef)
        recall = recall_at_k(tuned, queries, k)
        ann = per_query_us(lambda q: tuned.top_k(q, k), queries[:1000])
        exact = per_query_us(lambda q: tuned.exact_top_k(q, k), queries[:1000])
        rows.append(f"| {label} | {k} | {max(ef, k)} | {recall:.4f} | {np.percentile(ann, 50):.0f} / "
                    f"{np.percentile(ann, 99):.0f} | {np.percentile(exact, 50):.0f} / {np.percentile(exact, 99):.0f} |")
        print("  " + rows[-1], flush=True)
    return rows


def write_config(root: Path, index_dir: Path) -> Path:
    """The bench's policy folder: the shipped home surface as `fixed`, the shipped item surface at k = 50 and 200."""
    shipped = DEFAULT_CONFIG_DIR / "surfaces"
    fixed = {**yaml.safe_load((shipped / "home.yaml").read_text()), "name": "fixed", "deadlines": BENCH_DEADLINES}
    # Its caps and campaigns renamed: the bench clears their counters before each run (the serving clock is fixed at
    # the shop's end, so shows counted by earlier runs would never leave the window and every user would be capped).
    fixed["caps"] = [{**cap, "name": f"{BENCH_PREFIX}{cap['name']}"} for cap in fixed["caps"]]
    fixed["budgets"] = [{**b, "campaign": f"{BENCH_PREFIX}{b['campaign']}"} for b in fixed["budgets"]]
    surfaces = {"fixed": fixed}
    for name, k, rank_top in (*((f"items_k{k}", k, None) for k in KS), (SURFACES[-1], KS[-1], RANK_TOP)):
        items = yaml.safe_load((shipped / "recommended_items.yaml").read_text())
        items["candidates"]["ann"].update({"k": k, "index_dir": str(index_dir), "refresh_s": 0, "rank_top": rank_top})
        surfaces[name] = {**items, "name": name, "deadlines": BENCH_DEADLINES}
    return write_policy_dir(root, surfaces)


def drop_bench_records(client: redis.Redis, after_id: str) -> int:
    """Delete the decision records the bench's surfaces wrote after `after_id` from the demo's stream (an item record
    holds every slot's distribution over up to 200 candidates: left there, they would bloat the demo's Redis)."""
    dropped, low = 0, f"({after_id}"
    while entries := client.xrange(DECISION_STREAM, min=low, max="+", count=5000):
        ids = [eid for eid, fields in entries if json.loads(fields[b"record"])["surface"] in SURFACES]
        dropped += client.xdel(DECISION_STREAM, *ids) if ids else 0
        low = "(" + entries[-1][0].decode()
    return dropped


def compact(client: redis.Redis) -> None:
    """Rewrite the demo Redis's append-only file (its records above were appended, then deleted: ~1 GB a run, which
    the next start would replay); waits until the rewrite is done."""
    if not client.info("persistence").get("aof_enabled"):
        return
    client.bgrewriteaof()
    while (info := client.info("persistence"))["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"]:
        time.sleep(0.5)


def clear_item_caps(client: redis.Redis) -> None:
    """Forget the shows and spend the bench's decisions recorded: item caps, and the fixed surface's caps and
    campaigns (named with BENCH_PREFIX)."""
    patterns = ("hyperlift:item_caps:*", f"hyperlift:caps:*:{BENCH_PREFIX}*", f"hyperlift:budget:{{{BENCH_PREFIX}*")
    for pattern in patterns:
        for key in client.scan_iter(pattern, count=10_000):
            client.delete(key)


def latency_runs(
    port: int, server_pid: int, client: redis.Redis, users: np.ndarray, rate: float, repeats: int
) -> dict[str, dict]:
    """Interleaved open-loop runs per surface: the median-p99 run, every run's p99, trace segments, fallbacks and
    the server's CPU per request."""
    encoded = {s: [encode_post(f"127.0.0.1:{port}", "/v1/decisions", {"user_id": int(u), "surface": s}) for u in users]
               for s in SURFACES}
    out: dict[str, dict] = {s: {"runs": [], "segments": [], "fallbacks": [], "cpu_ms": []} for s in SURFACES}
    for surface in SURFACES:  # warm-up
        run_load("127.0.0.1", port, lambda i, s=surface: encoded[s][i % len(users)], 1000, rate=0, connections=8)
    for repeat in range(repeats):
        for surface in SURFACES:
            clear_item_caps(client)
            start_id = last_id(client)
            cpu_before = tree_cpu_s(server_pid)
            result = run_load("127.0.0.1", port, lambda i, s=surface: encoded[s][i], len(users), rate=rate,
                              connections=64)
            out[surface]["cpu_ms"].append((tree_cpu_s(server_pid) - cpu_before) / len(result.latencies_ms) * 1e3)
            segments, fallbacks = traces_since(client, start_id)
            out[surface]["runs"].append(result)
            out[surface]["segments"].append(segments)
            out[surface]["fallbacks"].append(fallbacks)
            p = result.percentiles()
            print(f"  run {repeat + 1}, {surface}: p50 {p['p50']:.2f} ms, p99 {p['p99']:.2f} ms, "
                  f"{result.achieved_rps:.0f} req/s", flush=True)
    return out


def served_slates(port: int, surface: str, users: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """One decision per user on `surface`, in turn: the slates served (item ids, NO_ITEM padded), fallbacks counted."""
    slates = np.full((len(users), SLATE), NO_ITEM, dtype=np.int64)
    fallbacks: dict[str, int] = {}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        for row, user in enumerate(users):
            body = http.post("/v1/decisions", json={"user_id": int(user), "surface": surface}).raise_for_status().json()
            items = [i for a in body["actions"] if (i := item_of(a["action_id"])) is not None]
            slates[row, :len(items)] = items
            if body["fallback"]:
                fallbacks[body["fallback"]] = fallbacks.get(body["fallback"], 0) + 1
    return slates, fallbacks


def value_table(
    shop, users: np.ndarray, slates: dict[str, np.ndarray], index: ItemIndex, vectors: pd.DataFrame
) -> list[str]:
    """Mean exact incremental revenue per decision (± standard error) of each way of filling the 5 slots."""
    popular = index.item_ids[np.argsort(-index.popularity, kind="stable")[:SLATE]]
    greedy = np.tile(popular, (len(users), 1))  # users without a vector: the popular slate, as the service does
    known = np.isin(users, vectors.index)
    for row in np.flatnonzero(known):
        greedy[row] = index.exact_top_k(user_vectors(vectors.loc[[users[row]]])[0], SLATE)[0]
    oracle, oracle_values = oracle_item_slates(shop, users, SLATE)
    organic = expected_revenue(shop, users)[:, 0]
    rows = {"nothing (no slate)": np.zeros(len(users))}
    for surface, served in slates.items():
        rows[f"served slate, `{surface}` (through HTTP)"] = item_slate_values(shop, users, served)
    rows["5 most popular items (the fallback's slate, for everyone)"] = item_slate_values(
        shop, users, np.tile(popular, (len(users), 1)))
    rows["top 5 by exact inner product, greedy (no exploration)"] = item_slate_values(shop, users, greedy)
    rows["oracle: best slate of ≤ 5 items knowing the truth"] = oracle_values
    lines = []
    for name, values in rows.items():
        se = values.std(ddof=1) / np.sqrt(len(values))
        losing = "–" if not values.any() else f"{np.mean(values <= 0):.1%}"
        lines.append(f"| {name} | {values.mean():.4f} ± {se:.4f} | {values.mean() / organic.mean():.2%} | {losing} |")
        print("  " + lines[-1], flush=True)
    lines.append(f"| (organic revenue per session without a slate, for scale) | {organic.mean():.4f} | 100% | |")
    return lines


def latency_lines(results: dict[str, dict]) -> list[str]:
    """The latency table: per surface the run with the median p99, and the added latency against `fixed`."""
    base = median_run(results["fixed"]["runs"]).percentiles()
    lines = [
        "| surface | achieved req/s | p50 ms | p99 ms | p99 of each run | added p50 / p99 ms vs fixed | service total "
        "p50 / p99 ms (traces) | features + caps round trip p50 / p99 ms | ANN search p50 / p99 ms | server CPU "
        "ms/req | non-200 | fallbacks |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for surface in SURFACES:
        result = results[surface]
        runs: list[LoadResult] = result["runs"]
        chosen = median_run(runs)
        at = next(i for i, run in enumerate(runs) if run is chosen)
        p = chosen.percentiles()
        segments = result["segments"][at]
        each = " / ".join(f"{r.percentiles()['p99']:.2f}" for r in runs)
        added = "–" if surface == "fixed" else f"{p['p50'] - base['p50']:+.2f} / {p['p99'] - base['p99']:+.2f}"

        def seg(name: str) -> str:
            return f"{segments[name]['p50']:.3f} / {segments[name]['p99']:.3f}" if name in segments else "–"

        bad = sum(n for status, n in chosen.statuses.items() if status != 200) + chosen.errors
        fallbacks = ", ".join(f"{r} {s:.1%}" for r, s in sorted(result["fallbacks"][at].items())) or "–"
        scoring = seg("scoring") if surface != "fixed" else f"(model scoring {seg('scoring')})"
        lines.append(f"| `{surface}` | {chosen.achieved_rps:.0f} | {p['p50']:.2f} | {p['p99']:.2f} | {each} | "
                     f"{added} | "
                     f"{seg('total')} | {seg('features')} | {scoring} | {np.median(result['cpu_ms']):.2f} | {bad} | "
                     f"{fallbacks} |")
    return lines


def cpu_note(results: dict[str, dict]) -> str:
    """The server CPU each item surface adds per decision over `fixed` (medians over the runs): steadier than the
    percentiles on a shared host, where other processes' bursts set the p99."""
    base = float(np.median(results["fixed"]["cpu_ms"]))
    added = ", ".join(f"`{s}` {float(np.median(results[s]['cpu_ms'])) - base:+.2f} ms" for s in SURFACES[1:])
    return (f"Server CPU added per decision over `fixed` (median of the runs): {added}. An item decision serves a "
            "slate of 5 (the fixed surface one action) and logs every slot's distribution over its candidates: "
            "~8 KB per record at 50 candidates, ~34 KB at 200, which the trace writer serializes and sends.")


def main() -> None:
    """Recall, latency and value; print the section (and write it into docs/benchmarks.md with --write)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--items", type=int, default=100_000, help="synthetic catalogue size for recall")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--value-users", type=int, default=3000)
    parser.add_argument("--write", action="store_true", help="write the section into docs/benchmarks.md")
    args = parser.parse_args()
    settings = HyperliftSettings()
    if not (settings.data_dir / ITEM_INDEX_DIR).exists():
        raise SystemExit(f"no item index under {settings.data_dir}: run `make demo` first")
    machine = machine_line()
    print(machine, flush=True)
    index = demo_index(settings)
    shop_config = ShopConfig.from_env()
    shop = build_shop(shop_config)
    vectors = newest_user_vectors(settings, shop.users["user_id"])
    queries = user_vectors(vectors.sample(min(args.queries, len(vectors)), random_state=0))
    print("recall@k vs exact search ...", flush=True)
    recall = recall_rows(f"demo shop: {len(index.item_ids)} items × d={index.dim}", index, queries)
    items, synthetic_queries = clustered(args.items, EMBEDDING_DIM, args.queries)
    started = time.perf_counter()
    synthetic = ItemIndex.build(np.arange(args.items), items, HnswParams())
    build_s = time.perf_counter() - started
    recall += recall_rows(f"synthetic: {args.items:,} items × d={EMBEDDING_DIM}", synthetic, synthetic_queries)

    n_open = int(args.rate * args.seconds)
    rng = np.random.default_rng(0)
    load_users = rng.integers(0, shop.n_users, size=n_open)
    value_users = np.sort(rng.choice(shop.n_users, size=min(args.value_users, shop.n_users), replace=False))
    with project_environment(settings) as env, tempfile.TemporaryDirectory() as tmp:
        os.environ.update(env)
        os.environ.setdefault("HYPERLIFT_SERVING_NOW", shop_config.end.isoformat())  # the shop's clock, as the demo
        os.environ.setdefault("HYPERLIFT_SERVING_MODE", "dev")
        index_dir = Path(tmp) / "items"
        version = index.publish(index_dir)
        config = write_config(Path(tmp) / "policy", index_dir)
        client = redis.Redis.from_url(env["REDIS_URL"])
        serving_env = {**env, "HYPERLIFT_SERVING_CONFIG_DIR": str(config),
                       "HYPERLIFT_SERVING_EXPERIMENTS_FILE": str(config / "experiments.yaml"),
                       "HYPERLIFT_SERVING_DECISION_WAL_DIR": str(Path(tmp) / "decision_wal")}
        port = free_port()
        command = [str(VENV_BIN / "uvicorn"), "serving.main:app", "--port", str(port), "--workers", "1",
                   "--log-level", "warning", "--no-access-log", *UVICORN_OPTIONS]
        server = start(command, serving_env, f"http://127.0.0.1:{port}/healthz")
        first_id = last_id(client)
        try:
            print(f"latency: open loop {args.rate:.0f}/s, {args.seconds:.0f} s per run ...", flush=True)
            results = latency_runs(port, server.pid, client, load_users, args.rate, args.repeats)
            print(f"value: one decision per user for {len(value_users)} users ...", flush=True)
            clear_item_caps(client)
            slates, value_fallbacks = {}, {}
            for surface in SURFACES[1:]:
                slates[surface], value_fallbacks[surface] = served_slates(port, surface, value_users)
            clear_item_caps(client)
        finally:
            server.terminate()
            server.wait(timeout=30)
            print(f"dropped the bench's {drop_bench_records(client, first_id)} decision records", flush=True)
            compact(client)
    values = value_table(shop, value_users, slates, index, vectors)

    command_line = (f".venv/bin/python -m bench.item_surface --rate {args.rate:.0f} --seconds {args.seconds:.0f} "
                    f"--repeats {args.repeats} --items {args.items} --queries {args.queries} "
                    f"--value-users {args.value_users}{' --write' if args.write else ''}")
    no_vector = 1.0 - np.isin(np.arange(shop.n_users), vectors.index).mean()
    nothing = ", ".join(f"{name} {np.mean((served == NO_ITEM).all(axis=1)):.1%}" for name, served in slates.items())
    fallback_note = "; ".join(f"{k}: " + (", ".join(f"{r} {n}" for r, n in sorted(f.items())) or "none")
                              for k, f in value_fallbacks.items())
    section = "\n".join([
        HEADING, "",
        f"Command: `{command_line}` (after `make demo`). Machine: {machine}.", "",
        f"Recall@k of the HNSW graph (M={HnswParams.m}, ef_construction={HnswParams.ef_construction}; the service "
        f"searches with max(ef_search, k), ef_search {HnswParams.ef_search} by default) against exact search, "
        f"{len(queries):,} queries; µs per query one at a time "
        f"(first 1,000 queries, after a warm-up). Synthetic index build: {build_s:.1f} s.", "",
        "| catalogue | k | ef_search | recall@k vs exact | ANN µs p50 / p99 | exact µs p50 / p99 |",
        "|---|---|---|---|---|---|",
        *recall, "",
        f"Latency through the HTTP service (one uvicorn worker, `make serve`'s options), open loop at {args.rate:.0f} "
        f"req/s, {n_open:,} requests per run for random users of the demo shop ({no_vector:.1%} of them have no "
        "vector and get the popular slate), runs interleaved in the table's order, "
        f"{args.repeats} times; the row shows the run with the median p99. Item surfaces: slate of {SLATE}, "
        f"softmax over inner products, per-item cap of 3 a day (counters cleared before each run); `{SURFACES[-1]}` "
        f"retrieves 200 and draws (and logs) only the best {RANK_TOP} eligible (`rank_top: {RANK_TOP}`); index version "
        f"`{version}` (the demo's vectors, published to a temporary folder). `fixed` is the shipped `home` surface "
        "(the demo champion's 9 actions, 2 caps, 2 budgets, their counters cleared before each run too). "
        "Trace segments: features = the one round trip (user vector, profile, consent events, item cap windows; for "
        "`fixed`: features, consent, cap and budget counters), ANN search = `scoring` on item surfaces (top-k "
        "search).", "",
        *latency_lines(results), "",
        cpu_note(results), "",
        f"Value of the slates from the simulator's truth (`simulator.item_truth`: exact expected incremental revenue "
        f"per decision vs showing nothing, attribution window {shop_config.attribution_window_hours:.0f} h; position "
        f"effects and exposure lift as in simulator/README.md \"Item recommendations\"), {len(value_users):,} random "
        f"users, one decision each through the service (item caps cleared; fallbacks: {fallback_note}). "
        f"Users served the neutral action (no marketing consent, which the region bundles require for every action, "
        f"items included): {nothing}; the popular, greedy and oracle rows show every user a slate, consent aside. "
        "Mean ± standard error over users:", "",
        "| slate | incremental revenue per decision | share of organic revenue | users with value ≤ 0 |",
        "|---|---|---|---|",
        *values,
    ]) + "\n"
    print("\n" + section)
    if args.write:
        write_section(HEADING, section)
        print(f"wrote the section to {DOCS}")


if __name__ == "__main__":
    main()
