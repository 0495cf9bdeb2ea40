"""CLI: `python -m simulator --out DIR` writes events/users/items/actions parquet files and prints counts."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from simulator.actions import actions_frame
from simulator.config import ShopConfig
from simulator.evaluation import policy_value
from simulator.events import conversion_by_action, simulate
from simulator.world import build_shop


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; sizes default to the HYPERLIFT_SIM_* environment, then to ShopConfig."""
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    parser.add_argument("--out", required=True, type=Path, help="directory for the parquet files")
    parser.add_argument("--users", type=int, help="override n_users")
    parser.add_argument("--items", type=int, help="override n_items")
    parser.add_argument("--days", type=int, help="override n_days")
    parser.add_argument("--seed", type=int, help="override seed")
    parser.add_argument("--quiet", action="store_true", help="no per-day progress")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Generate the shop and its event stream, write them to --out and print a summary."""
    args = _parse(argv)
    config = ShopConfig.from_env()
    overrides = {"n_users": args.users, "n_items": args.items, "n_days": args.days, "seed": args.seed}
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    started = time.perf_counter()

    def progress(day: int, n_days: int, sessions: int) -> None:
        if not args.quiet:
            print(f"  day {day}/{n_days}: {sessions} sessions so far", file=sys.stderr, flush=True)

    shop = build_shop(config)
    sim = simulate(shop, progress=progress)
    args.out.mkdir(parents=True, exist_ok=True)
    sim.events.to_parquet(args.out / "events.parquet", index=False)
    shop.users.to_parquet(args.out / "users.parquet", index=False)
    shop.items.to_parquet(args.out / "items.parquet", index=False)
    actions_frame().to_parquet(args.out / "actions.parquet", index=False)
    (args.out / "corruption_counts.json").write_text(json.dumps(sim.corruption_counts, indent=2) + "\n")
    elapsed = time.perf_counter() - started

    print(f"config: users={config.n_users} items={config.n_items} days={config.n_days} seed={config.seed}")
    print(f"wrote {len(sim.events)} events to {args.out} in {elapsed:.1f}s")
    print("events per type:")
    for event_type, count in sim.events["event_type"].value_counts().items():
        print(f"  {event_type:<16} {count}")
    print("malformed rows injected:", json.dumps(sim.corruption_counts))
    print("logged conversion by action (clean stream, purchases inside the period):")
    print(conversion_by_action(sim.clean_events).round(4).to_string())
    users = np.arange(config.n_users)
    values = policy_value(shop, users, np.full(config.n_users, "no_action", dtype=object))
    print("true incremental value per user and exposure vs no_action:")
    for name in ("oracle", "random", "random_promotion"):
        v = values[name]
        print(
            f"  {name:<16} revenue {v['incremental_revenue_per_user']:+.4f}"
            f"  net {v['incremental_net_value_per_user']:+.4f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
