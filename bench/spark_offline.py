"""The offline engines side by side: 1 M-exposure point-in-time build and 1 M-user materialization, pandas vs Spark.

    .venv/bin/python -m bench.spark_offline [--users 100000] [--days 30] [--rows 1000000] [--mat-users 1000000]
        [--features 20] [--engines pandas,local[1],local[2]] [--jobs pit,materialize] [--write]

Tables: the point-in-time build reads `bench.training_set_build`'s offline tables (`--users` × `--days` daily
activity snapshots, 19 Float32 features, a folder of daily files; one profile row per user, 3 Int64) with
`--rows` labelled exposures; the materialization reads `bench.materialize`'s table (`--mat-users` users ×
`--features` Float32 features, 1 % nulls) and writes it into an embedded redis-server (bulk mode, database flushed
before each run). Each engine runs each job in its own fresh process through `feature_repo.offline_engine` (what
the assets call). For Spark, `session s` is the JVM's start (once per process, not per job) and `seconds` the job
after it. Peak memory is the process tree's (Python driver + JVM) largest summed RSS, polled every 0.2 s.

Checks: every engine's training set equals the pandas engine's (`assert_frame_equal`, exact); every engine's Redis
hashes of 2,000 sampled users equal the pandas engine's, byte for byte. With `--write` the printed section replaces
its namesake in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.report import DOCS, write_section

HEADING = "## Offline engines: pandas vs Spark local[1] / local[2] (`.venv/bin/python -m bench.spark_offline --write`)"
ENGINES = ("pandas", "local[1]", "local[2]")
SAMPLE = 2000
ROOT = Path(__file__).resolve().parents[1]


def progress(message: str) -> None:
    """One progress line with the time of day."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def settings_for(home: Path, engine: str):
    """The settings a process of `engine` runs with (pandas, or spark on the master `engine`)."""
    from infra.settings import HyperliftSettings

    spark = engine != "pandas"
    return HyperliftSettings(home=home, reports_dir=home / "reports", offline_engine="spark" if spark else "pandas",
                             spark_master=engine if spark else "local[*]")


def child(args: argparse.Namespace) -> dict:
    """One job on one engine in this process; returns its figures (and leaves its output under the home)."""
    from feature_repo import offline_engine
    from feature_repo.store import feature_store

    home = Path(args.home)
    settings = settings_for(home, args.engine)
    store = feature_store(args.redis, settings)
    session_s = 0.0
    if args.engine != "pandas":
        began = time.perf_counter()
        offline_engine._spark(settings)  # the JVM starts here, once per process
        session_s = time.perf_counter() - began
    figures: dict = {"session_s": session_s}
    if args.child == "pit":
        from feature_repo.definitions import UPLIFT_FEATURE_SERVICE
        from feature_repo.point_in_time import service_views

        entity_df = pd.read_parquet(home / "entity_df.parquet")
        seconds = []
        for _ in range(2):  # cold (the JVM's first job: class loading, code generation), then warm
            began = time.perf_counter()
            joined = offline_engine.training_set_join(
                entity_df, service_views(store, UPLIFT_FEATURE_SERVICE), store, settings, drop_like_file_store=True
            )
            seconds.append(time.perf_counter() - began)
        figures |= {"seconds": seconds[0], "warm_s": seconds[1], "rows_in": len(entity_df), "rows_out": len(joined)}
        joined.to_parquet(home / f"pit_{args.engine}.parquet", index=False)
    else:
        import redis

        start, end = (pd.Timestamp(t).to_pydatetime() for t in (args.start, args.end))
        seconds = []
        for _ in range(2):  # cold, then warm (bulk mode writes the same bytes again)
            began = time.perf_counter()
            (done,) = offline_engine.materialize(store, ["bench_fv"], start, end, settings, mode="bulk",
                                                log=lambda line: print(line, file=sys.stderr, flush=True))
            seconds.append(time.perf_counter() - began)
        figures |= {"seconds": seconds[0], "warm_s": seconds[1], "read_s": done.read_s, "write_s": done.write_s,
                    "rows_out": done.rows}
        client = redis.Redis.from_url(args.redis)
        keys = sorted(client.keys())
        rng = np.random.default_rng(7)
        sample = [keys[i] for i in rng.choice(len(keys), size=min(SAMPLE, len(keys)), replace=False)]
        (home / f"mat_{args.engine}.pickle").write_bytes(pickle.dumps({k: client.hgetall(k) for k in sample}))
        figures["redis_keys"] = len(keys)
    return figures


def tree_rss_mb(pid: int) -> float:
    """Summed resident set of a process and all its descendants (the Spark driver's JVM is a child), MB."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def run(job: str, engine: str, home: Path, redis_url: str, extra: list[str]) -> dict:
    """Run one job in a fresh process; poll its tree's RSS and print progress every 15 s."""
    load_before = os.getloadavg()[0]
    command = [sys.executable, "-m", "bench.spark_offline", "--child", job, "--engine", engine, "--home", str(home),
               "--redis", redis_url, *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    started, peak, last = time.monotonic(), 0.0, time.monotonic()
    while process.poll() is None:
        peak = max(peak, tree_rss_mb(process.pid))
        if time.monotonic() - last > 15:
            progress(f"  {job} on {engine}: {time.monotonic() - started:.0f} s, RSS {peak:,.0f} MB so far")
            last = time.monotonic()
        time.sleep(0.2)
    out = process.stdout.read() if process.stdout else ""
    if process.returncode != 0:
        raise RuntimeError(f"{job} on {engine} failed (exit {process.returncode}); its stderr is above")
    figures = json.loads(out.strip().splitlines()[-1])
    return {"job": job, "engine": engine, "peak_mb": peak, "load": (load_before + os.getloadavg()[0]) / 2, **figures}


def amdahl(t1: float, t2: float) -> tuple[float, dict[int, float]]:
    """Serial fraction s from the times on 1 and 2 cores (T2 = T1·(s + (1 − s)/2)), and the speed-ups it predicts."""
    s = min(max(2 * t2 / t1 - 1, 0.0), 1.0)
    return s, {n: 1 / (s + (1 - s) / n) for n in (2, 4, 8, 16, 64)}


def section(args: argparse.Namespace, results: list[dict], verdicts: list[str], uptime: str) -> str:
    """The markdown section for docs/benchmarks.md."""
    lines = [
        HEADING, "",
        f"Command: `.venv/bin/python -m bench.spark_offline --users {args.users} --days {args.days} --rows {args.rows} "
        f"--mat-users {args.mat_users} --features {args.features} --write`. Point-in-time build: "
        f"{args.rows:,} exposures joined with `uplift_v1` ({args.users:,} users × {args.days} daily activity "
        f"snapshots, 19 Float32, TTL 2 d, a folder of daily files; {args.users:,} profile rows, 3 Int64), rows "
        f"the file store drops dropped (what `training_set` runs). Materialization: {args.mat_users:,} users × "
        f"{args.features} Float32 features into Redis, bulk. Each run in a fresh process through "
        f"`feature_repo.offline_engine`, the job twice: cold (a Spark process's first job: class loading, code generation) and warm; Spark's JVM start (`session s`) is outside both; read/write s of the warm run; peak MB = the "
        f"process tree's summed RSS (Python + JVM). Spark 4.3.0, Java 17, shuffle partitions 2 × cores. Machine: "
        f"2 cores, 24 GiB, shared with other workers: `uptime` before the run: `{uptime}`; `load` = mean 1-min load "
        f"over the run.", "",
        "| job | engine | rows out | cold s | warm s | warm rows/s | warm read s | warm write s | session s | "
        "peak MB | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(r: dict, name: str) -> str:
        return f"{r[name]:.1f}" if name in r else ""

    for r in results:
        rows = r.get("rows_in", r["rows_out"])
        lines.append(
            f"| {r['job']} | {r['engine']} | {r['rows_out']:,} | {r['seconds']:.1f} | {r['warm_s']:.1f} | "
            f"{rows / r['warm_s']:,.0f} | {cell(r, 'read_s')} | {cell(r, 'write_s')} | {r['session_s']:.1f} | "
            f"{r['peak_mb']:,.0f} | {r['load']:.1f} |"
        )
    lines += ["", *[f"- {v}" for v in verdicts]]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Generate the tables once, run every job on every engine in its own process, check, print (and write)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--mat-users", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--jobs", default="pit,materialize")
    parser.add_argument("--write", action="store_true")
    for hidden in ("--child", "--engine", "--home", "--redis", "--start", "--end"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    import redis

    from bench.materialize import FIRST_DAY, repo_objects, synthetic_table
    from bench.training_set_build import make_entity_df, make_tables
    from feature_repo.definitions import build_repo
    from feature_repo.store import feature_store
    from infra.redis_server import EmbeddedRedis

    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    engines, jobs = args.engines.split(","), args.jobs.split(",")
    home = Path(tempfile.mkdtemp(prefix="hyperlift-spark-bench-"))
    results, verdicts = [], []
    try:
        settings = settings_for(home, "pandas")
        with EmbeddedRedis(home / "redis") as server:
            client = redis.Redis.from_url(server.url)
            store = feature_store(server.url, settings)
            if "pit" in jobs:
                progress(f"writing {args.users:,} users × {args.days} days of snapshots and {args.rows:,} exposures")
                make_tables(settings.data_dir, args.users, args.days)
                make_entity_df(args.users, args.days, args.rows).to_parquet(home / "entity_df.parquet", index=False)
                store.apply(build_repo(settings.data_dir).objects())
                for engine in engines:
                    progress(f"point-in-time build on {engine} …")
                    results.append(run("pit", engine, home, server.url, []))
                    progress(f"  {results[-1]}")
                expected = pd.read_parquet(home / f"pit_{engines[0]}.parquet")
                for engine in engines[1:]:
                    pd.testing.assert_frame_equal(pd.read_parquet(home / f"pit_{engine}.parquet"), expected,
                                                  check_exact=True)
                    verdicts.append(f"point-in-time build, {engine} vs {engines[0]}: identical ({len(expected):,} rows × "
                                    f"{expected.shape[1]} columns, every value and dtype)")
            if "materialize" in jobs:
                progress(f"writing {args.mat_users:,} users × {args.features} features")
                table = synthetic_table(args.mat_users, args.features, 1)
                table.to_parquet(settings.data_dir / "bench.parquet", index=False)
                del table
                store.apply(repo_objects(settings.data_dir, args.features, None))
                window = ["--start", FIRST_DAY.isoformat(), "--end", (FIRST_DAY + pd.Timedelta(days=1)).isoformat()]
                for engine in engines:
                    client.flushdb()
                    progress(f"materialization on {engine} …")
                    results.append(run("materialize", engine, home, server.url, window))
                    progress(f"  {results[-1]}")
                reference = pickle.loads((home / f"mat_{engines[0]}.pickle").read_bytes())
                for engine in engines[1:]:
                    other = pickle.loads((home / f"mat_{engine}.pickle").read_bytes())
                    same = other == reference
                    verdicts.append(f"materialization, {engine} vs {engines[0]}: {len(reference):,} sampled users' "
                                    f"hashes {'identical, byte for byte' if same else 'DIFFER'}")
                    if not same:
                        raise AssertionError(verdicts[-1])
        for job in jobs:
            times = {r["engine"]: r["warm_s"] for r in results if r["job"] == job}
            if {"local[1]", "local[2]"} <= times.keys():
                s, speedups = amdahl(times["local[1]"], times["local[2]"])
                verdicts.append(f"{job}: Amdahl serial fraction from the warm local[1] → local[2] times s = {s:.2f}; predicted "
                                "speed-up over local[1] " + ", ".join(f"{n} cores ×{v:.1f}" for n, v in speedups.items()))
        text = section(args, results, verdicts, uptime)
        print("\n" + text)
        if args.write:
            write_section(HEADING, text)
            print(f"wrote {DOCS}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
