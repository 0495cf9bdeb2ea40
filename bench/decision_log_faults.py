"""The decision log under Redis faults: decisions served against decisions in the drained lake.

Run after `make demo` (reads its champion, Feast registry and Redis dump; the demo's own Redis is not touched):
    .venv/bin/python -m bench.decision_log_faults [--rate 150] [--fault-seconds 5] [--write]

Copies the demo's Redis dump into a temporary folder, starts a persistent redis-server on it (append-only,
appendfsync everysec, as `infra.redis_server` runs it), then the decision service (uvicorn, one worker; its
write-ahead folder and safe-mode file in the temporary folder, its decision stream `bench:decisions`) and sends an
open-loop load of --rate decisions/s on the `home` surface through each scenario:

  pause            SIGSTOP redis-server for --fault-seconds, then SIGCONT
  slow             redis-server blocked for 100 ms out of every 150 ms for --fault-seconds (DEBUG SLEEP 0.1 in a loop)
  kill + restart   SIGKILL redis-server, start it again on the same port 1 s later (it reloads its append-only file)
  graceful restart SIGTERM the service, start a new one on the same port (requests meanwhile are refused: not served)

Each scenario: 3 s of load, the fault, 5 s of load after the fault is over. Then it waits until the service has
sent every record to Redis, drains the stream into a temporary lake as the `decision_trace` asset does, and
compares the decision ids the service answered with the ids in the lake. spilled / replayed / dropped are the service's own counters
(hyperlift_decision_log_*) over the scenario; p99 during the fault is over the requests due in the fault window.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import redis

from bench.decision_latency import start
from bench.report import machine_line, write_section
from infra.redis_server import EmbeddedRedis, free_port
from infra.settings import HyperliftSettings
from serving.store.decision_log import DECISION_FORMAT, DRAIN_GROUP, StreamDrain, read_partitions
from serving.store.reconcile import reconcile
from simulator import ShopConfig
from training.lifecycle import alias_version
from training.registry import CHAMPION_ALIAS

VENV_BIN = Path(sys.executable).parent
STREAM = "bench:decisions"
TITLE = "## Decision log under Redis faults (`.venv/bin/python -m bench.decision_log_faults`)"
PRE_S, POST_S = 3.0, 5.0
N_USERS = 20_000


@dataclass
class Answers:
    """What the load generator saw: ids served, latency by due time, failures."""

    served: list[str] = field(default_factory=list)
    due: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    failed: int = 0


async def _load(url: str, rate: float, until: list[float], answers: Answers) -> None:
    """Open loop until the monotonic time `until[0]` (moved by the fault thread): request i is due at t0 + i/rate
    whatever happened before; latency from the due time."""
    rng = np.random.default_rng(int(time.time()))
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=httpx.Limits(max_connections=256)) as client:

        async def one(user: int, due: float) -> None:
            try:
                response = await client.post("/v1/decisions", json={"user_id": user, "surface": "home"})
            except httpx.HTTPError:
                answers.failed += 1
                return
            if response.status_code != 200:
                answers.failed += 1
                return
            answers.served.append(response.json()["decision_id"])
            answers.due.append(due)
            answers.latency_ms.append((time.monotonic() - due) * 1000.0)

        t0, tasks, i = time.monotonic(), [], 0
        while (due := t0 + i / rate) < until[0]:
            i += 1
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            tasks.append(asyncio.create_task(one(int(rng.integers(0, N_USERS)), due)))
        await asyncio.gather(*tasks)


def log_counters(url: str) -> dict[str, float]:
    """The service's hyperlift_decision_log_* samples (name with labels → value)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        if line.startswith("hyperlift_decision_log_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def delta(after: dict[str, float], before: dict[str, float], prefix: str) -> float:
    return sum(v - before.get(k, 0.0) for k, v in after.items() if k.startswith(prefix))


class Service:
    """The decision service under test (one uvicorn worker), restartable on the same port."""

    def __init__(self, env: dict[str, str]):
        self.env, self.port = env, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [str(VENV_BIN / "uvicorn"), "serving.main:app", "--port", str(self.port), "--workers", "1",
                   "--log-level", "warning", "--no-access-log"]
        self.process = start(command, self.env, f"{self.url}/healthz")

    def stop(self) -> None:
        """SIGTERM: uvicorn's graceful shutdown (the trace writer writes its queue and sends what Redis takes)."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=60)
            self.process = None

    def wait_sent(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while log_counters(self.url).get("hyperlift_decision_log_unsent_records", 1.0) > 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the service did not send its decision log within 60 s")
            time.sleep(0.2)


def run_scenario(name: str, fault, service: Service, rate: float) -> tuple[Answers, tuple[float, float], dict]:
    """Load for PRE_S, the fault (in a thread), POST_S; returns the answers, the fault window and the service's
    counters (before, after, and those of a stopped process)."""
    answers, window, until = Answers(), [0.0, 0.0], [float("inf")]
    counters = {"before": log_counters(service.url)}

    def inject() -> None:
        time.sleep(PRE_S)
        window[0] = time.monotonic()
        fault(counters)
        window[1] = time.monotonic()
        until[0] = window[1] + POST_S  # load goes on POST_S after the fault is over (a restart takes a while)

    thread = threading.Thread(target=inject)
    thread.start()
    asyncio.run(_load(service.url, rate, until, answers))
    thread.join()
    service.wait_sent()
    counters["after"] = log_counters(service.url)
    print(f"  {name}: served {len(answers.served)}, failed {answers.failed}", flush=True)
    return answers, (window[0], window[1]), counters


def main() -> None:
    """Run the four scenarios, print the table, write it to docs/benchmarks.md with --write."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=150.0)
    parser.add_argument("--fault-seconds", type=float, default=5.0)
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    settings = HyperliftSettings()
    dump = settings.redis_dir / "dump.rdb"
    if alias_version(settings.mlflow_uri, "hyperlift_uplift", CHAMPION_ALIAS) is None or not dump.exists():
        raise SystemExit("no champion or no Redis dump: run `make demo` first")
    machine = machine_line()
    print(machine, flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "redis").mkdir()
        shutil.copy(dump, tmp / "redis" / "dump.rdb")
        server = EmbeddedRedis(tmp / "redis", persist=True)
        server.start()
        dataset_mb = redis.Redis.from_url(server.url).info("memory")["used_memory"] / 2**20
        env = {
            **settings.environment(server.url),
            "HYPERLIFT_SERVING_NOW": os.environ.get("HYPERLIFT_SERVING_NOW", ShopConfig.from_env().end.isoformat()),
            "HYPERLIFT_SERVING_DECISION_STREAM": STREAM,
            "HYPERLIFT_SERVING_DECISION_WAL_DIR": str(tmp / "wal"),
            "HYPERLIFT_SERVING_SAFE_MODE_FILE": str(tmp / "safe_mode.json"),
            "HYPERLIFT_SERVING_LOG_DECISIONS": "false",
            "HYPERLIFT_SERVING_MODE": "dev",  # a local bench: no API keys (docs/security.md)
        }
        service = Service(env)
        service.start()
        lake = tmp / "lake"
        client = redis.Redis.from_url(server.url)

        def pause(_: dict) -> None:
            os.kill(server.pid, signal.SIGSTOP)
            time.sleep(args.fault_seconds)
            os.kill(server.pid, signal.SIGCONT)

        def slow(_: dict) -> None:
            sleeper = redis.Redis.from_url(server.url, socket_timeout=5)
            end = time.monotonic() + args.fault_seconds
            while time.monotonic() < end:
                sleeper.execute_command("DEBUG", "SLEEP", "0.1")
                time.sleep(0.05)

        def kill_restart(_: dict) -> None:
            server.kill()
            time.sleep(1.0)
            server.start()

        def graceful_restart(counters: dict) -> None:
            counters["old"] = log_counters(service.url)
            started = time.monotonic()
            service.stop()
            counters["stop_s"] = time.monotonic() - started
            service.start()
            counters["down_s"] = time.monotonic() - started

        try:
            for name, fault in (("pause", pause), ("slow", slow), ("kill + restart", kill_restart),
                                ("graceful restart", graceful_restart)):
                label = {"pause": f"Redis paused (SIGSTOP) {args.fault_seconds:.0f} s",
                         "slow": f"Redis slowed {args.fault_seconds:.0f} s (100 ms stalls every 150 ms)",
                         "kill + restart": "Redis killed (SIGKILL), restarted 1 s later",
                         "graceful restart": "service restarted (SIGTERM, new process)"}[name]
                answers, window, counters = run_scenario(name, fault, service, args.rate)
                if "down_s" in counters:
                    label += (f"; stopped in {counters['stop_s']:.1f} s, answering again after "
                              f"{counters['down_s']:.1f} s")
                StreamDrain(client, STREAM, DRAIN_GROUP, "bench", lake, DECISION_FORMAT).drain()
                logged = set(read_partitions(lake, record_format=DECISION_FORMAT)["decision_id"])
                served = set(answers.served)
                before, after = counters["before"], counters["after"]
                if "old" in counters:  # the counters of the stopped process, then the new one's from zero
                    parts = [(counters["old"], before), (after, {})]
                else:
                    parts = [(after, before)]
                spilled, replayed, dropped = (
                    sum(delta(a, b, f"hyperlift_decision_log_{m}") for a, b in parts)
                    for m in ("spilled_total", "replayed_total", "dropped_total")
                )
                due, lat = np.array(answers.due), np.array(answers.latency_ms)
                during = lat[(due >= window[0]) & (due <= window[1])]
                p99 = f"{np.percentile(during, 99):.1f}" if len(during) else "–"
                rows.append(
                    f"| {label} | {len(served)} | {len(served & logged)} | {len(served - logged)} | {spilled:.0f} | "
                    f"{replayed:.0f} | {dropped:.0f} | {answers.failed} | {p99} | {np.percentile(lat, 99):.1f} |"
                )
                print("  " + rows[-1], flush=True)
            service.stop()  # its final counters: the books of finished writers are exact
            books = reconcile(client, lake, STREAM)
            summary = (f"Reconciliation over the run, after the service stopped (`serving.store.reconcile`, "
                       f"{len(books.writers)} service processes): served {books.total('served')}, logged "
                       f"{books.total('logged')}, in flight {books.total('in_flight')}, dropped {books.dropped() or 0}, "
                       f"unaccounted {books.finished_unaccounted()}.")
        finally:
            service.stop()
            server.stop()
    command = f".venv/bin/python -m bench.decision_log_faults --rate {args.rate:.0f} --fault-seconds {args.fault_seconds:.0f}"
    table = "\n".join([
        TITLE,
        "",
        f"Command: `{command} --write` (after `make demo`; a copy of its Redis, append-only, {dataset_mb:.0f} MB in "
        f"memory: what a restart reloads). {args.rate:.0f} decisions/s "
        f"open loop on `home`, one uvicorn worker, {PRE_S:.0f} s before each fault and {POST_S:.0f} s after it is over; the lake is "
        f"drained after each scenario and compared with the decision ids the service answered. Machine: {machine}.",
        "",
        "| scenario | served | logged | missing | spilled | replayed | dropped | refused (not served) | p99 during fault ms | p99 whole run ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        summary,
        "",
        "Reading: *missing* is served − logged, the target is 0. *spilled*: records written to the local write-ahead "
        "file that Redis could not take at once; *replayed*: records sent from that file later, in order. After a "
        "kill, replayed exceeds spilled: on the new run_id the writer resends everything the lake had not confirmed "
        "yet (the append-only file kept most of it; the lake keeps each decision_id once). A SIGKILL of the service "
        "itself is in tests/serving/store/test_trace.py (exact: the records it had not written yet — the last 20 ms "
        "linger plus at most one 150 ms Redis call — are counted at the next start as `unwritten_at_exit`; everything "
        "else arrives). The kill row's latency includes Redis reloading its dataset on one of the two cores the worker "
        "and the load generator share. The service restart row's "
        "refused requests are the time one worker takes to start again on this machine: a restart loses no "
        "decision it answered, but a single instance cannot answer while it starts.",
        "",
    ])
    print("\n" + table)
    if args.write:
        write_section(TITLE, table)
        print("wrote docs/benchmarks.md")


if __name__ == "__main__":
    main()
