"""Dagster assets, checks, resources and jobs of the Hyperlift loop."""
