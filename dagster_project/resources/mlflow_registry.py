"""MLflow as a Dagster resource: tracking store, artifact folder, experiment, model name and promotion policy."""

from __future__ import annotations

import dagster as dg


class MlflowResource(dg.ConfigurableResource):
    """Where uplift runs are tracked, under which name they are registered, and what a promotion demands."""

    tracking_uri: str
    artifact_dir: str
    experiment: str = "hyperlift/promotions"  # one experiment per use case
    model_name: str = "hyperlift_uplift"
    promotion_qini_margin: float = 0.0  # a challenger must beat the champion's holdout Qini by at least this
    # Uplift calibration a challenger must show on the holdout: share of bins whose interval covers the
    # prediction, and a calibration slope within this many standard errors of 1.
    promotion_min_coverage: float = 0.8
    promotion_max_slope_z: float = 2.0
