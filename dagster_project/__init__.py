"""Dagster assets, checks, resources and jobs of the Hyperlift loop."""

import warnings

import dagster as dg

# The arrival-day assets take a whole partition range in one run (`backfill_policy`, a beta parameter, chosen
# deliberately: see partitions.py); Dagster warns at every decoration, on every import, in every process.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")
