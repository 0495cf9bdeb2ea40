"""Consent revocation → serving: how long from the revocation call until no worker serves the user a promotion.

    .venv/bin/python -m bench.consent_revocation [--users 300] [--workers 2] [--rate 200] [--write]

After `make demo` (its features, champion and Redis). Starts the decision service with `--workers` uvicorn workers
on the demo's default surfaces, keeps a background load of `--rate` decisions/s on other users (the bench's
load generator, open loop), and for each of `--users` consented users: POST /v1/consent revoking it, then decisions
for that user on fresh connections (so they land on any worker) until `--probes` answers in a row carry no
promotion. Time to effect = from sending the revocation until the first of those answers (it includes the
revocation's own round trip). Decisions of a user before the revocation must have included promotions for the user
to count (else it proves nothing). With `--write`, the section replaces its namesake in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from bench.decision_latency import start
from bench.decision_load import VENV_BIN
from bench.loadgen import encode_post, run_load
from bench.report import machine_line, write_section
from infra.launch import project_environment
from infra.redis_server import free_port
from infra.settings import HyperliftSettings
from serving.api.connection_limits import UVICORN_OPTIONS
from simulator import ShopConfig, build_shop

HEADING = "## Consent revocation → serving (`.venv/bin/python -m bench.consent_revocation --write`)"
NEUTRAL = "no_action"


def promoted(client: httpx.Client, url: str, user: int, n: int) -> bool:
    """Whether any of `n` decisions for `user` served a promotion."""
    return any(client.post(url, json={"user_id": user, "surface": "home"}).json()["actions"][0]["action_id"] != NEUTRAL
               for _ in range(n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=200.0, help="background decisions/s on other users")
    parser.add_argument("--probes", type=int, default=5, help="answers in a row without a promotion")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    settings = HyperliftSettings()
    shop_config = ShopConfig.from_env()
    users = build_shop(shop_config).users
    consented = users.loc[users["consent_marketing"].astype(bool), "user_id"].to_numpy()
    rng = np.random.default_rng(11)
    rng.shuffle(consented)
    machine = machine_line()
    print(machine, flush=True)
    with project_environment(settings) as env, tempfile.TemporaryDirectory() as tmp:
        os.environ.update(env)
        serving_env = {**env, "HYPERLIFT_SERVING_NOW": shop_config.end.isoformat(), "HYPERLIFT_SERVING_MODE": "dev",
                       "HYPERLIFT_SERVING_DECISION_WAL_DIR": str(Path(tmp) / "decision_wal")}
        port = free_port()
        server = start([str(VENV_BIN / "uvicorn"), "serving.main:app", "--port", str(port), "--workers",
                        str(args.workers), "--log-level", "warning", "--no-access-log", *UVICORN_OPTIONS],
                       serving_env, f"http://127.0.0.1:{port}/healthz")
        base = f"http://127.0.0.1:{port}"
        stop = threading.Event()
        background_users = consented[args.users * 4:]
        requests = [encode_post("127.0.0.1", "/v1/decisions", {"user_id": int(u), "surface": "home"})
                    for u in background_users[:5000]]

        def background() -> None:
            while not stop.is_set():
                run_load("127.0.0.1", port, requests, int(args.rate * 5), rate=args.rate, connections=16)

        loader = threading.Thread(target=background, daemon=True)
        loader.start()
        effect_ms, skipped, served_after = [], 0, 0
        started = time.perf_counter()
        try:
            with httpx.Client(timeout=5.0) as client:
                candidates = iter(consented[: args.users * 4])
                while len(effect_ms) < args.users:
                    user = int(next(candidates))
                    if not promoted(client, f"{base}/v1/decisions", user, 20):
                        skipped += 1  # the policy never promotes to this user: its revocation would prove nothing
                        continue
                    sent = time.perf_counter()
                    answer = httpx.post(f"{base}/v1/consent", json={"user_id": user, "granted": False}, timeout=5.0)
                    answer.raise_for_status()
                    first = None
                    streak = 0
                    while streak < args.probes:
                        # a fresh connection per probe: uvicorn's workers share the socket, any of them may answer
                        body = httpx.post(f"{base}/v1/decisions", json={"user_id": user, "surface": "home"}).json()
                        if body["actions"][0]["action_id"] == NEUTRAL:
                            first = first or time.perf_counter()
                            streak += 1
                        else:
                            served_after += 1
                            first, streak = None, 0
                    effect_ms.append((first - sent) * 1000.0)
                    if len(effect_ms) % 50 == 0:
                        print(f"  {len(effect_ms)}/{args.users} revocations", flush=True)
        finally:
            stop.set()
            loader.join(timeout=30)
            server.terminate()
            server.wait(timeout=30)
        seconds = time.perf_counter() - started
    times = np.array(effect_ms)
    p50, p99, worst = np.percentile(times, 50), np.percentile(times, 99), times.max()
    section = "\n".join([
        HEADING, "",
        f"`.venv/bin/python -m bench.consent_revocation --users {args.users} --workers {args.workers} --rate "
        f"{args.rate:.0f}` after `make demo`; {machine}; {seconds:.0f} s.", "",
        f"{args.users} consented users, each first served a promotion (users the policy never promotes to in 20 "
        f"decisions were skipped: {skipped}), then revoked through `POST /v1/consent` while {args.rate:.0f} "
        f"decisions/s of other users ran on {args.workers} uvicorn worker(s); then decisions for the user on fresh "
        f"connections (any worker) until {args.probes} in a row served no promotion.", "",
        "| revocations | time to effect p50 ms | p99 ms | max ms | promotions served after the revocation call returned |",
        "|---|---|---|---|---|",
        f"| {len(times)} | {p50:.2f} | {p99:.2f} | {worst:.2f} | {served_after} |", "",
        "Time to effect runs from sending the revocation to the first decision that honours it, so it includes the "
        "revocation's own round trip and one decision: the revocation is a Redis write that the next decision of "
        "every worker reads in its features' round trip, not a batch. Target (issue #15): p99 < 1 s.", "",
    ])
    print("\n" + section)
    if args.write:
        write_section(HEADING, section)
        print("wrote docs/benchmarks.md")


if __name__ == "__main__":
    main()
