"""The measured inputs of the capacity plan (docs/capacity.md): Redis memory per user by key family, the decision
log's bytes per decision, and the CPU one decision costs the service and Redis, on `make demo`'s home.

    .venv/bin/python -m bench.capacity [--rate 500] [--seconds 10] [--sample 2000] [--write]

1. **Memory.** Every key of the home's Redis is scanned and classed by family (Feast's feature hashes — binary keys
   without the `hyperlift:` prefix —, tiles, seen-event markers, caps, consent, budgets, streams, ...); up to
   `--sample` keys per family are measured with `MEMORY USAGE key SAMPLES 0` (exact) and the family's bytes are
   count × mean. Per user = family bytes / users with a feature row. Redis's own overhead (`used_memory` −
   `used_memory_dataset`) is reported next to it.
2. **Decision log.** Bytes per decision in the lake (the drained parquet partitions on disk, compressed) and in the
   decision service's write-ahead segments (what the spill folder holds per record before the drain).
3. **CPU per decision.** The 50-candidate bench surface of `bench.decision_load` is served by one uvicorn worker
   at `--rate` for `--seconds`; the service's CPU (its process tree) and redis-server's (`INFO cpu`,
   used_cpu_user + used_cpu_sys) over the run, divided by the decisions answered.

Run it after `make demo`. Prints a table; `--write` records it in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import redis

from bench.decision_latency import start
from bench.decision_load import (
    N_USERS, VENV_BIN, decision_requests, ensure_bench_model, last_id, traces_since, tree_cpu_s, write_config,
)
from bench.loadgen import run_load
from bench.report import machine_line, write_section
from infra.launch import project_environment
from infra.redis_server import free_port
from infra.settings import HyperliftSettings
from serving.api.connection_limits import UVICORN_OPTIONS
from simulator import ShopConfig
from training.lifecycle import alias_version
from training.registry import CHAMPION_ALIAS

TITLE = "## Capacity inputs: memory per user, decision-log bytes, CPU per decision (`.venv/bin/python -m bench.capacity`)"
PREFIX = b"hyperlift:"


def family(key: bytes) -> str:
    """The key family: `hyperlift:<name>:...` → name; any other key is a Feast feature row (binary entity key)."""
    if not key.startswith(PREFIX):
        return "feast feature rows"
    return key[len(PREFIX):].split(b":", 1)[0].decode(errors="replace") or "(empty)"


def memory_by_family(client: redis.Redis, sample: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """{family: {keys, sampled, mean_bytes, bytes, entries}} over every key (SCAN), MEMORY USAGE of a random sample;
    `entries` counts a stream family's entries (XLEN of each), None for other families."""
    scanned = list(client.scan_iter(count=5_000))
    pipe = client.pipeline(transaction=False)
    for key in scanned:
        pipe.type(key)
    keys: dict[str, list[bytes]] = defaultdict(list)
    for key, kind in zip(scanned, pipe.execute()):  # a family may hold several types (a stream and its bookkeeping)
        name = family(key)
        keys[f"{name} ({kind.decode()})" if kind == b"stream" else name].append(key)
    rng = np.random.default_rng(seed)
    out = {}
    for name, members in sorted(keys.items()):
        picked = members if len(members) <= sample else [members[i] for i in rng.choice(len(members), sample, replace=False)]
        pipe = client.pipeline(transaction=False)
        for key in picked:
            pipe.memory_usage(key, samples=0)
        sizes = [s for s in pipe.execute() if s is not None]
        mean = float(np.mean(sizes)) if sizes else 0.0
        entries = None
        if name.endswith("(stream)"):  # per decision or event, drained: not per user
            entries = sum(client.xlen(key) for key in members)
            mean = float(sum(client.memory_usage(key, samples=0) or 0 for key in members)) / len(members)
        out[name] = {"keys": len(members), "sampled": len(sizes), "mean_bytes": mean, "bytes": mean * len(members),
                     "entries": entries}
    return out


def lake_bytes_per_decision(data_dir: Path) -> tuple[int, int]:
    """(bytes of the drained decision partitions on disk, decisions in them)."""
    import pyarrow.parquet as pq

    files = sorted((data_dir / "decisions").rglob("*.parquet"))
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return sum(f.stat().st_size for f in files), rows


def redis_cpu_s(client: redis.Redis) -> float:
    """redis-server's user + system CPU seconds so far."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def wal_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sample", type=int, default=2_000, help="keys measured per family (MEMORY USAGE)")
    parser.add_argument("--write", action="store_true", help="record the table in docs/benchmarks.md")
    args = parser.parse_args(argv)
    settings = HyperliftSettings()
    machine = machine_line()
    print(machine, flush=True)
    started = time.perf_counter()
    with project_environment(settings) as env, tempfile.TemporaryDirectory() as tmp:
        os.environ.update(env)
        os.environ.setdefault("HYPERLIFT_SERVING_NOW", ShopConfig.from_env().end.isoformat())
        os.environ.setdefault("HYPERLIFT_SERVING_MODE", "dev")
        if alias_version(settings.mlflow_uri, "hyperlift_uplift", CHAMPION_ALIAS) is None:
            raise SystemExit("no champion registered: run `make demo` first")
        client = redis.Redis.from_url(env["REDIS_URL"])
        print("scanning the home's Redis (MEMORY USAGE per key family) ...", flush=True)
        memory = memory_by_family(client, args.sample)
        info = client.info("memory")
        lake_bytes, lake_rows = lake_bytes_per_decision(settings.data_dir)

        print("registering the 50-action bench model (once) ...", flush=True)
        ensure_bench_model(settings)
        config = write_config(Path(tmp) / "policy")
        wal = Path(tmp) / "decision_wal"
        serving_env = {**env, "HYPERLIFT_SERVING_CONFIG_DIR": str(config),
                       "HYPERLIFT_SERVING_EXPERIMENTS_FILE": str(config / "experiments.yaml"),
                       "HYPERLIFT_SERVING_DECISION_WAL_DIR": str(wal)}
        port = free_port()
        server = start([str(VENV_BIN / "uvicorn"), "serving.main:app", "--port", str(port), "--workers", "1",
                        "--log-level", "warning", "--no-access-log", *UVICORN_OPTIONS], serving_env,
                       f"http://127.0.0.1:{port}/healthz")
        try:
            n = int(args.rate * args.seconds)
            requests = decision_requests(port, "fifty", np.random.default_rng(0).integers(0, N_USERS, size=n))
            run_load("127.0.0.1", port, requests, 1000, rate=0, connections=8)  # warm-up
            start_id = last_id(client)
            wal_before, service_before, redis_before = wal_bytes(wal), tree_cpu_s(server.pid), redis_cpu_s(client)
            print(f"serving {n} decisions (50 candidates) at {args.rate:.0f}/s ...", flush=True)
            run = run_load("127.0.0.1", port, requests, n, rate=args.rate, connections=64)
            answered = len(run.latencies_ms)
            service_ms = (tree_cpu_s(server.pid) - service_before) / answered * 1000.0
            redis_ms = (redis_cpu_s(client) - redis_before) / answered * 1000.0
            wal_per_decision = (wal_bytes(wal) - wal_before) / answered
            _, fallbacks = traces_since(client, start_id)
            shed = float(fallbacks.get("overloaded", 0.0))  # a shed decision answers the neutral action, no Redis
        finally:
            server.terminate()
            server.wait(timeout=30)

    users = memory.get("feast feature rows", {}).get("keys", 0)
    lines = [TITLE, "",
             f"`.venv/bin/python -m bench.capacity --rate {args.rate:.0f} --seconds {args.seconds:.0f} --sample "
             f"{args.sample}` after `make demo`; {machine}; {time.perf_counter() - started:.0f} s. Redis of the demo's "
             f"home: {users:,} users with a feature row; used_memory {info['used_memory'] / 2**20:.1f} MiB, of which "
             f"dataset {info['used_memory_dataset'] / 2**20:.1f} MiB (the rest is Redis's own: buffers, scripts, "
             "the key table's overhead).", "",
             "| key family | keys | keys per user | mean bytes per key (MEMORY USAGE) | bytes per user |",
             "|---|---|---|---|---|"]
    per_user = {name: m for name, m in memory.items() if m["entries"] is None}
    streams = {name: m for name, m in memory.items() if m["entries"] is not None}
    for name, m in sorted(per_user.items(), key=lambda kv: -kv[1]["bytes"]):
        lines.append(f"| {name} | {m['keys']:,} | {m['keys'] / max(users, 1):.2f} | {m['mean_bytes']:,.0f} | "
                     f"{m['bytes'] / max(users, 1):,.0f} |")
    total = sum(m["bytes"] for m in per_user.values())
    lines += [f"| **all per-user families** | {sum(m['keys'] for m in per_user.values()):,} | | | "
              f"**{total / max(users, 1):,.0f}** |", ""]
    if streams:
        lines += ["Streams (per decision or event until the drain trims them, not per user):", "",
                  "| stream family | keys | entries | bytes per entry |", "|---|---|---|---|"]
        lines += [f"| {name} | {m['keys']} | {m['entries']:,} | {m['bytes'] / max(m['entries'], 1):,.0f} |"
                  for name, m in sorted(streams.items())]
        lines.append("")
    lines += ["| decision log | bytes per decision |", "|---|---|",
              f"| lake (drained parquet on disk, {lake_rows:,} decisions) | {lake_bytes / max(lake_rows, 1):,.0f} |",
              f"| write-ahead segments before the drain ({answered:,} decisions of the 50-candidate surface) | "
              f"{wal_per_decision:,.0f} |", "",
              "| CPU per decision (50 candidates, one worker, open loop) | ms |", "|---|---|",
              f"| decision service (its process tree), {answered:,} answered at {run.achieved_rps:.0f}/s, "
              f"p99 {run.percentiles()['p99']:.2f} ms | {service_ms:.3f} |",
              f"| redis-server (used_cpu_user + used_cpu_sys) | {redis_ms:.3f} |",
              f"| redis-server per decision that ran the policy (not shed by admission control: "
              f"{1 - shed:.0%} of them) | {redis_ms / max(1 - shed, 1e-9):.3f} |",
              "", "Fallbacks during the run (share of decisions): "
              + (", ".join(f"{k} {v:.1%}" for k, v in sorted(fallbacks.items())) or "none") + ".", ""]
    text = "\n".join(lines)
    print("\n" + text)
    if args.write:
        write_section(TITLE, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
