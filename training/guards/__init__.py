"""Drift and risk guards (issue 15, item 4): population stability and distance per feature and for the score,
calibration of predicted vs realised uplift, alarms, the cautious policy switch and the automatic rollback.
See docs/guards.md."""
