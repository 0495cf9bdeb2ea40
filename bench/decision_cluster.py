"""Decisions against one redis-server vs a local Redis Cluster (three masters, three replicas), same world.

Self-contained (no `make demo` needed): a small simulated shop is materialized into an embedded redis-server and
into a LocalRedisCluster, one champion is registered, and the decision service (the worker's runtime, as uvicorn
builds it) answers N decisions on the event loop, C at a time, on a surface with a frequency cap and a campaign
budget (the read round trip: features, consent, caps, budget; the reservation: cap and budget scripts). Both
servers run on this machine, so the cluster figures show the cost of the split (a round trip per master, sent at
once), not a network's. Then `OnlineWriter` writes ROWS synthetic profile rows into each, in both modes.

    .venv/bin/python -m bench.decision_cluster [N] [C] [ROWS]
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from feature_repo.contracts import validate_events
from feature_repo.definitions import ACTIVITY_TABLE, PROFILE_TABLE, UPLIFT_FEATURE_SERVICE, build_repo
from feature_repo.online_writer import OnlineWriter
from feature_repo.pseudonyms import lake_pseudonymizer, pseudonymize
from feature_repo.store import feature_store
from feature_repo.transforms import (
    ACTIVITY_FEATURES,
    PROFILE_FEATURES,
    SnapshotWindow,
    user_activity_snapshots,
    user_profile_rows,
)
from infra import keys
from infra.redis_cluster_server import LocalRedisCluster
from infra.redis_server import EmbeddedRedis
from infra.settings import HyperliftSettings
from serving.core.config import ServingSettings
from serving.core.runtime import build_runtime
from serving.core.schemas import DecisionRequest
from simulator import ShopConfig, build_shop, simulate_events
from training.learners import TLearner
from training.pyfunc import UpliftModel
from training.registry import CHAMPION_ALIAS, log_and_register

SHOP = ShopConfig(n_users=2000, n_items=40, n_days=4, seed=5)
SURFACE = {
    "name": "push", "feature_service": UPLIFT_FEATURE_SERVICE,
    "exploration": {"method": "epsilon_greedy", "epsilon": 0.1},
    "candidates": {"source": "model_actions", "actions": ["no_action", "push_reminder"]},
    "caps": [{"name": "pushes_per_day", "window_s": 86400, "limit": 1000, "actions": ["push_reminder"]}],
    "budgets": [{"campaign": "push_campaign", "daily_budget": 1e6, "costs": {"push_reminder": 0.02}, "pacing": "none"}],
}
REGIONS = {"standard": {"name": "standard", "default": True, "regions": ["north", "south", "east", "west"]}}


def world(home: Path, urls: list[str]) -> list[int]:
    """The shop's features written into every online store of `urls`, and a champion; returns the (raw) user ids.
    The features are keyed by the users' pseudonyms under the home's key (made here, as the pipeline's first run
    makes it), as the pipeline keys them: the service maps each request's raw id to the same pseudonym."""
    settings = HyperliftSettings(home=home, reports_dir=home / "reports")
    door = lake_pseudonymizer(path=keys.key_file(settings))
    shop = build_shop(SHOP)
    accepted = validate_events(simulate_events(shop), pd.Timestamp(SHOP.end)).accepted
    window = SnapshotWindow(pd.Timestamp(SHOP.start), SHOP.n_days)
    users = pseudonymize(shop.users, door)
    activity = user_activity_snapshots(pseudonymize(accepted, door), users["user_id"].to_numpy(), window)
    profile = user_profile_rows(users)
    for path, frame in ((ACTIVITY_TABLE + "/all.parquet", activity), (PROFILE_TABLE, profile)):
        (settings.data_dir / path).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(settings.data_dir / path, index=False)
    last = activity[activity["event_timestamp"] == activity["event_timestamp"].max()]
    for url in urls:
        store = feature_store(url, settings)
        store.apply(build_repo(settings.data_dir).objects())
        writer = OnlineWriter(store)
        writer.write("user_activity_fv", last)
        writer.write("user_profile_fv", profile)
    features = [*ACTIVITY_FEATURES, *PROFILE_FEATURES]
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.random((900, len(features))), columns=features)
    treatment = np.array(["no_action", "pct10_sitewide", "push_reminder"])[np.arange(900) % 3]
    y = X["mobile_view_share"].to_numpy() * 3 * (treatment == "push_reminder") + rng.random(900)
    model = UpliftModel(TLearner(objective="reg:squarederror", n_estimators=20).fit(X, treatment, y), features,
                        {"pct10_sitewide": 0.0, "push_reminder": 0.02})
    log_and_register(model=model, tracking_uri=settings.mlflow_uri, experiment="bench-cluster",
                     artifact_dir=settings.mlflow_artifacts_dir, model_name="hyperlift_uplift",
                     feature_service=UPLIFT_FEATURE_SERVICE, params={}, metrics={}, tags={}, input_example=X,
                     alias=CHAMPION_ALIAS)
    return [int(u) for u in shop.users["user_id"]]


def policy_dir(root: Path) -> Path:
    for kind, items in (("surfaces", {"push": SURFACE}), ("regions", REGIONS)):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for name, body in items.items():
            (root / kind / f"{name}.yaml").write_text(yaml.safe_dump(body))
    (root / "experiments.yaml").write_text(yaml.safe_dump({"layers": []}))
    return root


async def drive(service, users: list[int], n: int, concurrency: int) -> tuple[np.ndarray, float, Counter]:
    """n decisions, `concurrency` in flight: (latency ms each, wall seconds, fallbacks by reason)."""
    latencies = np.empty(n)
    fallbacks: Counter = Counter()
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            request = DecisionRequest(user_id=users[i % len(users)], surface="push")
            started = time.perf_counter()
            response = await service.decide_async(request)
            latencies[i] = (time.perf_counter() - started) * 1000.0
            if response.fallback is not None:
                fallbacks[response.fallback] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started, fallbacks


def measure(name: str, url: str, home: Path, users: list[int], n: int, concurrency: int) -> str:
    policy = policy_dir(home / f"policy-{name}")
    settings = ServingSettings(redis_url=url, seed=1, config_dir=policy, experiments_file=policy / "experiments.yaml",
                               model_refresh_s=0, log_decisions=False, mode="dev",
                               decision_wal_dir=home / f"wal-{name}", safe_mode_file=home / f"safe-{name}.json")
    runtime = build_runtime(settings)
    runtime.start()
    try:
        service = runtime.service
        asyncio.run(drive(service, users, min(500, n), concurrency))  # warm-up
        latencies, wall, fallbacks = asyncio.run(drive(service, users, n, concurrency))
    finally:
        runtime.stop()
    p50, p99 = np.percentile(latencies, [50, 99])
    reasons = ", ".join(f"{count} {reason}" for reason, count in fallbacks.most_common()) or "0"
    return f"| {name} | {n} | {concurrency} | {p50:.2f} | {p99:.2f} | {n / wall:,.0f} | {reasons} |"


def writes(home: Path, url: str, name: str, rows: int) -> list[str]:
    """OnlineWriter throughput of `rows` profile rows in both modes, as table rows."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "user_id": np.arange(rows, dtype=np.int64) + 10**9,
        "event_timestamp": pd.Timestamp(SHOP.end) + pd.to_timedelta(rng.integers(0, 10**6, rows), unit="s"),
        "region_code": rng.integers(0, 4, rows), "is_mobile": rng.integers(0, 2, rows),
        "consent_marketing": rng.integers(0, 2, rows),
    })
    writer = OnlineWriter(feature_store(url, HyperliftSettings(home=home, reports_dir=home / "reports")))
    out = []
    for mode in ("bulk", "newer_or_equal"):
        started = time.perf_counter()
        writer.write("user_profile_fv", frame, mode=mode)
        seconds = time.perf_counter() - started
        out.append(f"| {name} | {mode} | {rows:,} | {seconds:.2f} | {rows / seconds:,.0f} |")
    return out


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 5000
    concurrency = int(argv[1]) if len(argv) > 1 else 8
    rows = int(argv[2]) if len(argv) > 2 else 200_000
    root = Path(tempfile.mkdtemp(prefix="hyperlift-bench-cluster-"))
    home = root / "hyperlift"
    os.environ["HYPERLIFT_HOME"] = str(home)
    os.environ["HYPERLIFT_SERVING_NOW"] = pd.Timestamp(SHOP.end).isoformat()
    with EmbeddedRedis(root / "redis") as single, LocalRedisCluster(root / "cluster") as cluster:
        users = world(home, [single.url, cluster.url])
        servers = (("one redis-server", single.url), ("Redis Cluster, 3 masters", cluster.url))
        table = [measure(name, url, home, users, n, concurrency) for name, url in servers]
        written = [line for name, url in servers for line in writes(home, url, name, rows)]
    print(f"decisions on the `push` surface (features + consent + cap + budget read, cap + budget reservation), "
          f"in process on the event loop, {os.cpu_count()} cores")
    print("| online store | decisions | in flight | p50 ms | p99 ms | decisions/s | fallbacks |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(table))
    print(f"\nOnlineWriter, {rows:,} rows of user_profile_fv (a master and its replica both apply each write)")
    print("| online store | mode | rows | seconds | rows/s |")
    print("|---|---|---|---|---|")
    print("\n".join(written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
