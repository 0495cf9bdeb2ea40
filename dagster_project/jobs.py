"""Jobs: one that runs the whole graph."""

from __future__ import annotations

import dagster as dg

hyperlift_job = dg.define_asset_job(
    "hyperlift_job",
    selection=dg.AssetSelection.all(),
    description="Ingest → validate → features → Feast/Redis → training set → challenger → gate → champion.",
)
