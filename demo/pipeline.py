"""`make pipeline`: the Dagster graph once, in process, over the landing folder — your own files
(HYPERLIFT_LANDING_SOURCE=files, HYPERLIFT_LANDING_DIR=…; docs/landing.md) or the simulated shop's — from raw events
to a registered challenger and the promotion gate's verdict. Prints what came in and what was trained."""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta

from dagster_project.partitions import data_span, partition_range_tags
from demo.run import run_pipeline
from infra.launch import project_environment
from infra.settings import HyperliftSettings
from simulator import ShopConfig
from training.lifecycle import alias_version
from training.registry import CHAMPION_ALIAS

MODEL = "hyperlift_uplift"


def main() -> int:
    settings = HyperliftSettings()
    try:
        first, end = data_span(settings)
    except (FileNotFoundError, ValueError) as error:
        print(f"pipeline: {error}", file=sys.stderr)
        return 2
    days = (first.strftime("%Y-%m-%d"), (end - timedelta(days=1)).strftime("%Y-%m-%d"))
    print(f"pipeline: source {settings.landing_source}, landing {settings.resolved_landing_dir}, days {days[0]} … "
          f"{days[1]}", flush=True)
    started = time.perf_counter()
    with project_environment(settings, announce=print) as env:
        os.environ.update(env)
        metadata, gate = run_pipeline(settings, env["REDIS_URL"], ShopConfig.from_env(), partition_range_tags(*days))
        champion = alias_version(settings.mlflow_uri, MODEL, CHAMPION_ALIAS)
    raw, validated = metadata.get("raw_events", {}), metadata.get("validated_events", {})
    training = metadata.get("training_set", {})
    print("\n=== pipeline summary")
    print(f"  raw events landed: {raw.get('rows')} (refused at landing: {raw.get('refused_at_landing')})")
    print(f"  validated: {validated.get('accepted')}, quarantined: "
          f"{validated.get('quarantined')}")
    print(f"  training rows: {training.get('rows')}")
    print(f"  promotion gate: {'promoted' if gate['promoted'] else 'refused'} {gate['reasons']}")
    print(f"  champion: {MODEL} version {champion} ({time.perf_counter() - started:.0f} s)")
    print("  next: `make serve` (HYPERLIFT_SERVING_NOW at the data's end if it is in the past), `make dagster`, "
          "`make models`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
