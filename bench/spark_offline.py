"""The offline engines side by side: 1 M-exposure point-in-time build, 1 M-user materialization and the validation
of a 1 M-event arrival day, pandas vs Spark.

    .venv/bin/python -m bench.spark_offline [--users 100000] [--days 30] [--rows 1000000] [--mat-users 1000000]
        [--features 20] [--raw-rows 1000000] [--seen 2000000] [--engines pandas,local[1],local[2]]
        [--jobs pit,materialize] [--write]
    .venv/bin/python -m bench.spark_offline --jobs validate [--raw-rows 1000000] [--write]   # the validation alone

Tables: the point-in-time build reads `bench.training_set_build`'s offline tables (`--users` × `--days` daily
activity snapshots, 19 Float32 features, a folder of daily files; one profile row per user, 3 Int64) with
`--rows` labelled exposures; the materialization reads `bench.materialize`'s table (`--mat-users` users ×
`--features` Float32 features, 1 % nulls) and writes it into an embedded redis-server (bulk mode, database flushed
before each run). The validation (`--jobs validate`, not in the default jobs) validates one arrival day of
`--raw-rows` raw events with the lake's dtypes (`synthetic_raw_day`: every event type, 2.2 % of the rows given
one defect of the kinds the simulator injects, in-day duplicates, replays of ids of earlier days, late and future
rows) against `--seen` ids accepted on earlier days, as `validated_events` does (`offline_engine.validate_day`).
Each engine runs each job in its own fresh process through `feature_repo.offline_engine` (what the assets call).
For Spark, `session s` is the JVM's start (once per process, not per job) and `seconds` the job after it. Peak
memory is the process tree's (Python driver + JVM) largest summed RSS, polled every 0.2 s.

Checks: every engine's training set equals the pandas engine's (`assert_frame_equal`, exact); every engine's Redis
hashes of 2,000 sampled users equal the pandas engine's, byte for byte; every engine's accepted and quarantined rows
and rule counts equal the pandas engine's (exact). With `--write` the printed sections replace their namesakes in
docs/benchmarks.md (the validation has a section of its own, so `--jobs validate --write` leaves the others).
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
VALIDATE_HEADING = ("## Offline engines: validating one arrival day, pandas vs Spark local[1] / local[2] "
                    "(`.venv/bin/python -m bench.spark_offline --jobs validate --write`)")
ARRIVAL = pd.Timestamp("2026-10-20", tz="UTC")
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
    store = feature_store(args.redis, settings) if args.child != "validate" else None
    session_s = 0.0
    if args.engine != "pandas":
        began = time.perf_counter()
        offline_engine._spark(settings)  # the JVM starts here, once per process
        session_s = time.perf_counter() - began
    figures: dict = {"session_s": session_s}
    if args.child == "validate":
        from feature_repo.event_time import Lateness

        raw = pd.read_parquet(home / "raw_day.parquet")
        seen = pd.Index(pd.read_parquet(home / "seen.parquet")["event_id"], dtype="string")  # as validated_events
        seconds = []
        for _ in range(2):  # cold, then warm
            began = time.perf_counter()
            result = offline_engine.validate_day(raw, ARRIVAL, Lateness(2), seen, settings)
            seconds.append(time.perf_counter() - began)
        figures |= {"seconds": seconds[0], "warm_s": seconds[1], "rows_in": len(raw), "rows_out": len(result.accepted),
                    "quarantined": len(result.quarantined)}
        (home / f"validate_{args.engine}.pickle").write_bytes(pickle.dumps(result))
        return figures
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


def synthetic_raw_day(rows: int, seen_rows: int, seed: int = 17) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one arrival day of `rows` raw events with the lake's dtypes, `seen_rows` ids accepted on earlier days).

    Event types 60 % page views, 15 % add-to-cart, 5 % purchases, 20 % exposures; times over the arrival day, 3 %
    up to two days late. Bad rows, 2.2 % in all, one defect each, at random places: 0.2 % each of a missing event
    id, an unknown event type, a missing user, a negative revenue or a propensity out of (0, 1], a time in the
    future, a time beyond the watermark; 0.5 % copies of another row's id (in-day duplicates), 0.5 % ids accepted
    on an earlier day (replays)."""
    from feature_repo.contracts import RAW_COLUMNS
    from simulator.actions import ACTION_IDS

    rng = np.random.default_rng(seed)
    kind = rng.choice(np.array(["page_view", "add_to_cart", "purchase", "promo_exposure"], dtype=object), rows,
                      p=[0.60, 0.15, 0.05, 0.20])
    item, purchase, exposure = kind != "promo_exposure", kind == "purchase", kind == "promo_exposure"
    offset = rng.integers(0, 86_400_000_000, rows)  # µs into the arrival day
    late = rng.random(rows) < 0.03
    offset[late] -= rng.integers(0, 2 * 86_400_000_000, late.sum())
    seen_ids = np.array([f"old-{i:09d}" for i in range(seen_rows)], dtype=object)
    frame = pd.DataFrame({
        "event_id": np.array([f"ev-{i:09d}" for i in range(rows)], dtype=object),
        "event_type": kind,
        "event_version": pd.array(np.ones(rows, dtype=np.int64), dtype="Int64"),
        "ts": ARRIVAL + pd.to_timedelta(offset, unit="us"),
        "user_id": pd.array(rng.integers(0, 200_000, rows), dtype="Int64"),
        "session_id": np.array([f"s-{i}" for i in rng.integers(0, rows // 5 + 1, rows)], dtype=object),
        "item_id": pd.Series(rng.integers(0, 5_000, rows), dtype="Int64").where(item),
        "category_id": pd.Series(rng.integers(0, 8, rows), dtype="Int64").where(item),
        "price": np.where(item, np.round(rng.uniform(1, 300, rows), 2), np.nan),
        "revenue": np.where(purchase, np.round(rng.uniform(1, 300, rows), 2), np.nan),
        "action_id": np.where(exposure | purchase, rng.choice(np.array(list(ACTION_IDS), dtype=object), rows), None),
        "propensity": np.where(exposure, rng.uniform(0.05, 1.0, rows), np.nan),
        "surface": np.where(exposure, "home", None),
        "device": rng.choice(np.array(["mobile", "desktop", None], dtype=object), rows),
        "region": rng.choice(np.array(["north", "south", "east", "west"], dtype=object), rows),
    })[list(RAW_COLUMNS)]
    bad = rng.permutation(rows)
    shares = {"null_event_id": 0.002, "unknown_event_type": 0.002, "null_user_id": 0.002, "bad_money": 0.002,
              "future_ts": 0.002, "beyond_watermark": 0.002, "duplicate": 0.005, "replay": 0.005}
    at = 0
    for name, share in shares.items():
        pick, at = bad[at:at + int(share * rows)], at + int(share * rows)
        if name == "null_event_id":
            frame.loc[pick, "event_id"] = None
        elif name == "unknown_event_type":
            frame.loc[pick, "event_type"] = "pageview_v0"
        elif name == "null_user_id":
            frame.loc[pick, "user_id"] = pd.NA
        elif name == "bad_money":
            frame.loc[pick, "revenue"] = -5.0
            frame.loc[pick, "propensity"] = 1.25  # the revenue rule hits purchases, this one exposures
        elif name == "future_ts":
            frame.loc[pick, "ts"] = ARRIVAL + pd.Timedelta(days=1, hours=2)
        elif name == "beyond_watermark":
            frame.loc[pick, "ts"] = ARRIVAL - pd.Timedelta(days=2, hours=3)
        elif name == "duplicate":
            frame.loc[pick, "event_id"] = frame["event_id"].to_numpy()[rng.integers(0, rows, len(pick))]
        elif name == "replay" and seen_rows:
            frame.loc[pick, "event_id"] = seen_ids[rng.integers(0, seen_rows, len(pick))]
    return frame, pd.DataFrame({"event_id": seen_ids})


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


def validate_section(args: argparse.Namespace, results: list[dict], verdicts: list[str], uptime: str) -> str:
    """The markdown section of the validation job for docs/benchmarks.md."""
    lines = [
        VALIDATE_HEADING, "",
        f"Command: `.venv/bin/python -m bench.spark_offline --jobs validate --raw-rows {args.raw_rows} --seen "
        f"{args.seen} --write`. One arrival day of {args.raw_rows:,} raw events with the lake's dtypes "
        "(`synthetic_raw_day`: 2.2 % of the rows given one defect of every kind, in-day duplicates, replays, late and "
        "future rows) "
        f"validated against {args.seen:,} ids of earlier days through `offline_engine.validate_day` (what "
        "`validated_events` runs), in a fresh process per engine, twice: cold and warm; `session s` is the JVM's "
        "start, outside both; peak MB = the process tree's summed RSS (Python + JVM). Spark 4.3.0, Java 17. Machine: "
        f"2 cores, 24 GiB, shared with other workers: `uptime` before the run: `{uptime}`; `load` = mean 1-min load "
        "over the run.", "",
        "| job | engine | raw rows | accepted | quarantined | cold s | warm s | warm rows/s | session s | peak MB "
        "| load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| validate | {r['engine']} | {r['rows_in']:,} | {r['rows_out']:,} | {r['quarantined']:,} | "
            f"{r['seconds']:.1f} | {r['warm_s']:.1f} | {r['rows_in'] / r['warm_s']:,.0f} | {r['session_s']:.1f} | "
            f"{r['peak_mb']:,.0f} | {r['load']:.1f} |"
        )
    lines += ["", *[f"- {v}" for v in verdicts]]
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--raw-rows", type=int, default=1_000_000)
    parser.add_argument("--seen", type=int, default=2_000_000)
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
        if "validate" in jobs:
            progress(f"writing an arrival day of {args.raw_rows:,} raw events and {args.seen:,} earlier ids")
            raw, seen = synthetic_raw_day(args.raw_rows, args.seen)
            raw.to_parquet(home / "raw_day.parquet", index=False)
            seen.to_parquet(home / "seen.parquet", index=False)
            del raw, seen
            for engine in engines:
                progress(f"validation on {engine} …")
                results.append(run("validate", engine, home, "", []))
                progress(f"  {results[-1]}")
            reference = pickle.loads((home / f"validate_{engines[0]}.pickle").read_bytes())
            for engine in engines[1:]:
                other = pickle.loads((home / f"validate_{engine}.pickle").read_bytes())
                pd.testing.assert_frame_equal(other.accepted, reference.accepted, check_exact=True)
                pd.testing.assert_frame_equal(other.quarantined, reference.quarantined, check_exact=True)
                assert other.rule_counts == reference.rule_counts, (other.rule_counts, reference.rule_counts)
                verdicts.append(f"validation, {engine} vs {engines[0]}: identical ({len(reference.accepted):,} "
                                f"accepted, {len(reference.quarantined):,} quarantined rows, every value and dtype; "
                                f"rule counts {reference.rule_counts})")
        for job in jobs:
            times = {r["engine"]: r["warm_s"] for r in results if r["job"] == job}
            if {"local[1]", "local[2]"} <= times.keys():
                s, speedups = amdahl(times["local[1]"], times["local[2]"])
                verdicts.append(f"{job}: Amdahl serial fraction from the warm local[1] → local[2] times s = {s:.2f}; predicted "
                                "speed-up over local[1] " + ", ".join(f"{n} cores ×{v:.1f}" for n, v in speedups.items()))
        texts = []
        if any(r["job"] != "validate" for r in results):
            texts.append((HEADING, section(args, [r for r in results if r["job"] != "validate"],
                                           [v for v in verdicts if not v.startswith("valid")], uptime)))
        if "validate" in jobs:
            texts.append((VALIDATE_HEADING, validate_section(args, [r for r in results if r["job"] == "validate"],
                                                             [v for v in verdicts if v.startswith("valid")], uptime)))
        for heading, text in texts:
            print("\n" + text)
            if args.write:
                write_section(heading, text)
                print(f"wrote {DOCS}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
