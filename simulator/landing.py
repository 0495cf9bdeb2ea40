"""The simulator as one writer of the landing folder (dagster_project/resources/landing.py, docs/landing.md): the
simulated shop's events by arrival day, its customers and its action catalogue, as a shop would deliver its files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from simulator.actions import actions_frame
from simulator.arrival import arrival_days
from simulator.config import ShopConfig
from simulator.events import simulate_events
from simulator.world import build_shop


def write_landing(config: ShopConfig, folder: Path, fmt: str = "parquet") -> dict[str, int]:
    """Write the shop's files into `folder` (replacing its event files); returns rows per event day."""
    world = build_shop(config)
    events = simulate_events(world)
    arrived = arrival_days(events, config).dt.strftime("%Y-%m-%d")
    days = folder / "events"
    days.mkdir(parents=True, exist_ok=True)
    for old in days.iterdir():
        if not old.name.startswith("."):
            old.unlink()
    rows = {}
    for day, part in events.groupby(arrived, sort=True):
        _write(part.reset_index(drop=True), days / f"{day}.{fmt}", fmt)
        rows[str(day)] = len(part)
    _write(world.users, folder / f"customers.{fmt}", fmt)
    _write(actions_frame(), folder / f"actions.{fmt}", fmt)
    return rows


def _write(frame: pd.DataFrame, path: Path, fmt: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    if fmt == "parquet":
        frame.to_parquet(tmp, index=False)
    elif fmt in ("csv", "csv.gz"):
        frame.to_csv(tmp, index=False, compression="gzip" if fmt.endswith(".gz") else None, date_format="%Y-%m-%dT%H:%M:%S.%fZ")
    elif fmt in ("jsonl", "jsonl.gz"):
        frame.to_json(tmp, orient="records", lines=True, date_format="iso", compression="gzip" if fmt.endswith(".gz") else None)
    else:
        raise ValueError(f"unknown landing format {fmt!r}")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    """`python -m simulator.landing --out DIR [--format csv.gz]`: write the simulated shop (HYPERLIFT_SIM_USERS,
    _DAYS, _SEED, ...) as a landing folder, e.g. to try the files path (docs/landing.md) at full size."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--format", default="csv.gz", choices=["parquet", "csv", "csv.gz", "jsonl", "jsonl.gz"])
    args = parser.parse_args(argv)
    config = ShopConfig.from_env()
    rows = write_landing(config, args.out, fmt=args.format)
    print(f"wrote {sum(rows.values())} events in {len(rows)} day files, {config.n_users} customers and the action "
          f"catalogue to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
