"""Point-in-time training-set build for 1M labelled rows: seconds and peak memory, Feast side by side with our join.

    .venv/bin/python -m bench.training_set_build [--users 100000] [--days 30] [--rows 1000000]
        [--paths feast_file,pit_join,pit_join_file_compat,feast_duckdb] [--duckdb-python /tmp/venv/bin/python]
        [--max-rss-gb 9] [--write]

Writes realistic offline tables under a temporary HYPERLIFT_HOME where the project's repo objects read them
(`--users` × `--days` daily activity snapshots with the real ACTIVITY_FEATURES; one profile row per user with
PROFILE_FEATURES, 5 % signed up inside the window), `feast apply`s `feature_repo.definitions.build_repo` there
(online store: an embedded Redis, unused), and builds an entity frame of `--rows` labelled exposures (user_id,
event_timestamp uniform over the window, action_id, propensity, label_revenue). Each path then runs in its own
fresh subprocess; its peak RSS is that process's maximum resident set (interpreter, Feast and the entity frame
included; the RSS before the join is printed too). The parent polls each child and kills it above `--max-rss-gb`.

Paths: `feast_file` = what the training_set asset runs (`get_historical_features(entity_df, uplift_v1).to_df()` on
the file offline store); `pit_join` = `feature_repo.point_in_time.point_in_time_join` (one row per entity row,
nulls where no row qualifies); `pit_join_file_compat` = the same, dropping the rows the file store drops;
`feast_duckdb` = Feast's DuckDB offline store, run only where `duckdb` imports (`--duckdb-python` names a
throw-away venv that has feast[duckdb]). Outputs are compared afterwards: file_compat against feast_file and
pit_join against feast_duckdb, value by value. With `--write` the printed section replaces its namesake in
docs/benchmarks.md (appended the first time).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from string import Template

import numpy as np
import pandas as pd

from bench.report import DOCS, write_section

HEADING = "## Point-in-time training-set build (`.venv/bin/python -m bench.training_set_build --write`)"
START = pd.Timestamp("2026-10-01", tz="UTC")
ACTIONS = np.array(["no_action", *(f"promo_{i}" for i in range(8))], dtype=object)
PATHS = ("feast_file", "pit_join", "pit_join_file_compat", "feast_duckdb")
ENTITY_FILE = "bench_entity_df.parquet"
SORT_KEYS = ["user_id", "event_timestamp", "action_id"]


def write_source(source, frame: pd.DataFrame, parts: pd.Series | None = None) -> None:
    """Write `frame` where a FileSource reads it: its file, or one file per value of `parts` in its folder."""
    path = Path(source.path)
    if path.suffix == ".parquet":
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
        return
    path.mkdir(parents=True, exist_ok=True)
    keys = parts if parts is not None else pd.Series(0, index=frame.index)
    for key, part in frame.groupby(keys.to_numpy(), sort=True):
        part.to_parquet(path / f"{key}.parquet", index=False)


def make_tables(data_dir: Path, users: int, days: int, seed: int = 0) -> dict:
    """Activity snapshots and profile rows where build_repo(data_dir)'s sources read them; returns their sizes."""
    from feature_repo.definitions import build_repo
    from feature_repo.transforms import ACTIVITY_FEATURES, PROFILE_FEATURES

    rng = np.random.default_rng(seed)
    repo = build_repo(data_dir)
    stamps = pd.date_range(START + pd.Timedelta(days=1), periods=days, freq="D", tz="UTC")
    activity = pd.DataFrame(
        {"user_id": np.repeat(np.arange(users, dtype=np.int64), days), "event_timestamp": np.tile(stamps, users)}
    )
    for name in ACTIVITY_FEATURES:
        activity[name] = rng.gamma(1.5, 2.0, len(activity)).astype(np.float32)
    created = repo.activity_source.created_timestamp_column
    if created:  # the source keeps revisions: 2 % of snapshots revised 6 h later with other values
        activity[created] = activity["event_timestamp"]
        revised = activity.sample(frac=0.02, random_state=seed).copy()
        revised[created] += pd.Timedelta(hours=6)
        revised[list(ACTIVITY_FEATURES)] = rng.gamma(1.5, 2.0, (len(revised), len(ACTIVITY_FEATURES))).astype(np.float32)
        activity = pd.concat([activity, revised], ignore_index=True)
    write_source(repo.activity_source, activity, activity["event_timestamp"].dt.strftime("%Y-%m-%d"))
    signup = START - pd.to_timedelta(rng.integers(1, 3 * 365, users), unit="D")
    late = rng.random(users) < 0.05
    signup = signup.where(~late, START + pd.to_timedelta(rng.integers(0, days * 86_400, users), unit="s"))
    profile = pd.DataFrame({"user_id": np.arange(users, dtype=np.int64), "event_timestamp": signup})
    for name, high in zip(PROFILE_FEATURES, (4, 2, 2), strict=True):
        profile[name] = rng.integers(0, high, users).astype(np.int64)
    write_source(repo.profile_source, profile)
    return {"activity_rows": len(activity), "profile_rows": len(profile), "revisions": bool(created)}


def make_entity_df(users: int, days: int, rows: int, seed: int = 1) -> pd.DataFrame:
    """Labelled exposures as the training_set asset builds them: µs timestamps uniform over the window."""
    rng = np.random.default_rng(seed)
    us = rng.integers(0, days * 86_400_000_000, rows)
    arm = rng.choice(len(ACTIONS), rows, p=np.r_[0.3, np.full(8, 0.7 / 8)])
    return pd.DataFrame(
        {
            "user_id": rng.integers(0, users, rows).astype(np.int64),
            "event_timestamp": START + pd.to_timedelta(us, unit="us"),
            "action_id": ACTIONS[arm],
            "propensity": np.where(arm == 0, 0.3, 0.7 / 8),
            "label_revenue": (rng.random(rows) < 0.08) * rng.lognormal(3.0, 0.5, rows),
        }
    )


def store_for(path: str, settings, redis_url: str):
    """The project's FeatureStore; for feast_duckdb the same config with Feast's DuckDB offline store."""
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    from feature_repo.store import REPO_PATH, feature_store

    if path != "feast_duckdb":
        return feature_store(redis_url, settings)
    import yaml

    # feature_store() has no offline-store switch; read the same yaml and swap only the offline store.
    text = Template((REPO_PATH / "feature_store.yaml").read_text()).substitute(settings.environment(redis_url))
    config = RepoConfig(**(yaml.safe_load(text) | {"offline_store": {"type": "duckdb"}}))
    config.repo_path = REPO_PATH
    return FeatureStore(repo_path=str(REPO_PATH), config=config)


def rss_mb(pid: int | str = "self") -> float:
    """Current resident set of a process, MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def run_one(path: str, home: Path, redis_url: str) -> dict:
    """In a fresh process: read the entity frame, build the training set one way, time it, save it."""
    from feature_repo.definitions import UPLIFT_FEATURE_SERVICE
    from feature_repo.point_in_time import point_in_time_join, service_views
    from infra.settings import HyperliftSettings

    settings = HyperliftSettings(home=home, reports_dir=home / "reports")
    store = store_for(path, settings, redis_url)
    entity_df = pd.read_parquet(home / ENTITY_FILE)
    before_mb = rss_mb()
    started = time.perf_counter()
    if path.startswith("pit_join"):
        joined = point_in_time_join(
            entity_df, service_views(store, UPLIFT_FEATURE_SERVICE), store,
            drop_like_file_store=path == "pit_join_file_compat",
        )
    else:
        joined = store.get_historical_features(
            entity_df=entity_df, features=store.get_feature_service(UPLIFT_FEATURE_SERVICE)
        ).to_df()
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    joined.to_parquet(home / f"out_{path}.parquet", index=False)
    return {"path": path, "entity_rows": len(entity_df), "rows_out": len(joined), "columns": joined.shape[1],
            "seconds": seconds, "rss_before_mb": before_mb, "peak_rss_mb": peak_mb}


def measure(path: str, python: str, home: Path, redis_url: str, max_rss_gb: float) -> dict:
    """Run one path in a child process; poll its RSS (progress every 15 s) and kill it above the cap."""
    load = os.getloadavg()
    child = subprocess.Popen(
        [python, "-m", "bench.training_set_build", "--one", path, "--home", str(home), "--redis", redis_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    started, seen_mb, last_note = time.monotonic(), 0.0, time.monotonic()
    while child.poll() is None:
        seen_mb = max(seen_mb, rss_mb(child.pid))
        if seen_mb > max_rss_gb * 1024:
            child.kill()
            child.communicate()
            return {"path": path, "killed": True, "seconds": time.monotonic() - started, "peak_rss_mb": seen_mb,
                    "load": load}
        if time.monotonic() - last_note > 15:
            print(f"  {path}: {time.monotonic() - started:.0f} s, RSS {rss_mb(child.pid):,.0f} MB", flush=True)
            last_note = time.monotonic()
        time.sleep(0.2)
    out, err = child.communicate()
    if child.returncode != 0:
        reason = next((line for line in reversed(err.strip().splitlines()) if line.strip()), "no stderr")
        print(f"  {path} failed (exit {child.returncode}):\n{err[-2000:]}", flush=True)
        return {"path": path, "failed": reason[:200], "load": load}
    return json.loads(out.strip().splitlines()[-1]) | {"load": load}


def compare(home: Path, left: str, right: str, data_dir: Path) -> str:
    """Whether two saved outputs hold the same rows and values (order aside); a one-line verdict.

    Where they differ, rows are checked against the activity revisions: snapshots are dense and daily, so an
    entity row's snapshot is the one stamped at its midnight, and with two revisions the newer created one wins.
    """
    from feature_repo.definitions import build_repo

    a, b = (pd.read_parquet(home / f"out_{p}.parquet") for p in (left, right))
    if len(a) != len(b) or list(a.columns) != list(b.columns):
        return f"{left} vs {right}: DIFFER in shape {a.shape} vs {b.shape}"
    a, b = (f.sort_values(SORT_KEYS, kind="stable").reset_index(drop=True) for f in (a, b))
    nulls = int(a[a.columns[5:]].isna().all(axis=1).sum())
    try:
        pd.testing.assert_frame_equal(a, b, check_exact=True, check_dtype=False)
        return f"{left} vs {right}: identical ({len(a):,} rows × {a.shape[1]} columns, every value; {nulls:,} rows all-null)"
    except AssertionError:
        pass
    features = list(a.columns[5:])
    differs = ~((a[features] == b[features]) | (a[features].isna() & b[features].isna())).all(axis=1)
    source = build_repo(data_dir).activity_source
    if not source.created_timestamp_column:
        return f"{left} vs {right}: DIFFER in {int(differs.sum()):,} of {len(a):,} rows"
    first = features[0]
    activity = pd.read_parquet(source.path, columns=["user_id", "event_timestamp", source.created_timestamp_column, first])
    newest = activity.sort_values(source.created_timestamp_column).groupby(["user_id", "event_timestamp"]).agg(
        revisions=(first, "size"), newest=(first, "last"))
    stamp = pd.MultiIndex.from_arrays([a["user_id"], a["event_timestamp"].dt.floor("D")])
    revised = newest.reindex(stamp)["revisions"].fillna(0).to_numpy() > 1
    want = newest.reindex(stamp)["newest"].to_numpy()
    a_newest, b_newest = (a[first].to_numpy() == want)[revised], (b[first].to_numpy() == want)[revised]
    return (
        f"{left} vs {right}: DIFFER in {int(differs.sum()):,} of {len(a):,} rows, all of them rows whose snapshot has "
        f"two revisions at the same feature timestamp: {bool((~differs | revised).all())}. Of the {int(revised.sum()):,} "
        f"such rows, {left} holds the newest-created revision in {a_newest.mean():.1%}, {right} in {b_newest.mean():.1%}; "
        f"the other {len(a) - int(differs.sum()):,} rows are identical in every value"
    )


def section(args: argparse.Namespace, sizes: dict, results: list[dict], verdicts: list[str], uptime: str) -> str:
    """The markdown section for docs/benchmarks.md."""
    lines = [
        HEADING, "",
        f"Command: `.venv/bin/python -m bench.training_set_build --users {args.users} --days {args.days} --rows "
        f"{args.rows} --duckdb-python <throw-away venv with feast[duckdb]> --write`. Offline tables: "
        f"{sizes['activity_rows']:,} activity rows ({args.users:,} users × {args.days} daily snapshots, 19 Float32 "
        f"features{', 2 % of them revised' if sizes['revisions'] else ''}; TTL 2 d) and {sizes['profile_rows']:,} "
        f"profile rows (3 Int64, TTL 0); entity frame: {args.rows:,} labelled exposures uniform over the window. "
        f"Each path in its own fresh process; peak RSS = that process's maximum resident set (Python, Feast and "
        f"the {args.rows:,}-row entity frame included, `RSS before` = before the join). Machine: 2 cores, 24 GiB; "
        f"`uptime` before the run: `{uptime}` (other agents' tests share the cores).", "",
        "| path | entity rows | rows out | seconds | rows/s | peak RSS MB | RSS before MB | load (1 min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.get("failed"):
            lines.append(f"| {r['path']} | {args.rows:,} | failed: {r['failed']} | | | | | {r['load'][0]:.2f} |")
            continue
        if r.get("killed"):
            lines.append(f"| {r['path']} | {args.rows:,} | killed above {args.max_rss_gb} GB | > {r['seconds']:.1f} | "
                         f"| > {r['peak_rss_mb']:,.0f} | | {r['load'][0]:.2f} |")
            continue
        lines.append(
            f"| {r['path']} | {r['entity_rows']:,} | {r['rows_out']:,} | {r['seconds']:.1f} | "
            f"{r['entity_rows'] / r['seconds']:,.0f} | {r['peak_rss_mb']:,.0f} | {r['rss_before_mb']:,.0f} | "
            f"{r['load'][0]:.2f} |"
        )
    lines += ["", "Outputs compared value by value (rows sorted by user, time, action):", ""]
    lines += [f"- {v}" for v in verdicts]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Build the tables and entity frame once, run each path in its own process, compare, print (and write)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--duckdb-python", help="a Python whose venv has feast[duckdb] (default: this one)")
    parser.add_argument("--max-rss-gb", type=float, default=9.0)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, Path(args.home), args.redis)))
        return

    from feature_repo.definitions import build_repo
    from feature_repo.store import feature_store
    from infra.redis_server import EmbeddedRedis
    from infra.settings import HyperliftSettings

    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    home = Path(tempfile.mkdtemp(prefix="hyperlift-pit-bench-"))
    try:
        settings = HyperliftSettings(home=home, reports_dir=home / "reports")
        started = time.perf_counter()
        print(f"writing {args.users:,} users × {args.days} days of offline tables under {home} …", flush=True)
        sizes = make_tables(settings.data_dir, args.users, args.days)
        make_entity_df(args.users, args.days, args.rows).to_parquet(home / ENTITY_FILE, index=False)
        print(f"  {sizes} + {args.rows:,} entity rows in {time.perf_counter() - started:.1f} s", flush=True)
        results, verdicts = [], []
        with EmbeddedRedis(home / "redis") as redis_server:
            feature_store(redis_server.url, settings).apply(build_repo(settings.data_dir).objects())
            for path in filter(None, args.paths.split(",")):
                python = args.duckdb_python if path == "feast_duckdb" and args.duckdb_python else sys.executable
                if path == "feast_duckdb" and subprocess.run([python, "-c", "import duckdb"], capture_output=True).returncode:
                    print(f"  {path}: skipped, duckdb does not import in {python}", flush=True)
                    continue
                print(f"{path} …", flush=True)
                results.append(measure(path, python, home, redis_server.url, args.max_rss_gb))
                print(f"  {results[-1]}", flush=True)
        done = {r["path"] for r in results if "rows_out" in r}
        for left, right in (("pit_join_file_compat", "feast_file"), ("pit_join", "feast_duckdb")):
            if {left, right} <= done:
                verdicts.append(compare(home, left, right, settings.data_dir))
                print(verdicts[-1], flush=True)
        text = section(args, sizes, results, verdicts, uptime)
        print("\n" + text)
        if args.write:
            write_section(HEADING, text)
            print(f"wrote {DOCS}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
