"""`make serve`: the decision service over the state `make demo` left, on the demo shop's clock.

    python -m infra.launch -- .venv/bin/python -m demo.serve [--port 8000]

The demo's shop ends on a fixed day (2026-10-31 by default); judged against the wall clock its features are weeks
old and every decision would fall back to `stale_features`. So, unless HYPERLIFT_SERVING_NOW is set, the service
starts on the simulated clock `make demo` wrote (`$HYPERLIFT_HOME/demo_clock`) and says so. Without the demo's state
(no Feast registry or no champion yet) it stops with what to run instead of a stack trace. Dev mode
(HYPERLIFT_SERVING_MODE=dev, set by the Makefile) and the production start are described in the README.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from infra.settings import HyperliftSettings
from serving.api.connection_limits import UVICORN_OPTIONS

NOW_VARIABLE = "HYPERLIFT_SERVING_NOW"
METRICS_VARIABLE = "HYPERLIFT_SERVING_METRICS_DIR"


def demo_clock(settings: HyperliftSettings, environ: dict[str, str]) -> tuple[str | None, str]:
    """The simulated instant to start at (None: the wall clock) and a line saying where it comes from."""
    if environ.get(NOW_VARIABLE):
        return environ[NOW_VARIABLE], f"simulated clock from {NOW_VARIABLE}: {environ[NOW_VARIABLE]}"
    path = settings.demo_clock_path
    if path.exists() and (instant := path.read_text().strip()):
        return instant, (
            f"simulated clock at the demo shop's end, {instant} (from {path}; the demo's features are fresh then). "
            f"Set {NOW_VARIABLE} to start elsewhere; POST /v1/admin/clock moves it forward"
        )
    return None, "wall clock (no demo clock under HYPERLIFT_HOME)"


def missing_state(settings: HyperliftSettings) -> str | None:
    """Why the service cannot start on this home, as an instruction; None when the demo's state is there."""
    if settings.profile == "local" and not settings.feast_registry_path.exists():  # cluster: a SQL registry
        return (
            f"no Feast registry at {settings.feast_registry_path}: nothing has been materialized under "
            f"HYPERLIFT_HOME={settings.home}. Run `make demo` first (about 2 minutes), then `make serve`."
        )
    return None


def shared_metrics(settings: HyperliftSettings, workers: int) -> None:
    """Several workers publish their metrics to one folder so a scrape of any of them covers all
    (serving/ops/metrics_shared.py): HYPERLIFT_SERVING_METRICS_DIR, under the home unless set, emptied of an earlier
    run's files."""
    folder = os.environ.get(METRICS_VARIABLE) or str(settings.home / "serving" / "metrics")
    os.environ[METRICS_VARIABLE] = folder
    for stale in Path(folder).glob("*.prom"):
        stale.unlink(missing_ok=True)
    print(f"[hyperlift] {workers} workers: /metrics sums them all ({METRICS_VARIABLE}={folder}); the simulated "
          "clock, when on, is each worker's own (POST /v1/admin/clock moves the one that answers)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Check the state, pick the clock, then replace this process with uvicorn."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS") or 1),
                        help="uvicorn worker processes; with more than one, /metrics sums every worker's counters")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be 1 or more; got {args.workers}")
    settings = HyperliftSettings()
    problem = missing_state(settings)
    if problem:
        print(f"[hyperlift] {problem}", file=sys.stderr)
        return 2
    instant, said = demo_clock(settings, dict(os.environ))
    if instant:
        os.environ[NOW_VARIABLE] = instant
    print(f"[hyperlift] decision service on http://{args.host}:{args.port}, {said}", file=sys.stderr)
    if args.workers > 1:
        shared_metrics(settings, args.workers)
    command = [sys.executable, "-m", "uvicorn", "serving.main:app", "--host", args.host, "--port", str(args.port),
               "--workers", str(args.workers), *UVICORN_OPTIONS]
    os.execv(sys.executable, command)  # uvicorn owns the process: Ctrl-C and SIGTERM reach it directly
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
