"""MLflow as a Dagster resource: tracking store, artifact folder, experiment and registered model names."""

from __future__ import annotations

import dagster as dg


class MlflowResource(dg.ConfigurableResource):
    """Where uplift runs are tracked and under which names they are registered."""

    tracking_uri: str
    artifact_dir: str
    experiment: str = "hyperlift-uplift"
    model_name: str = "hyperlift_uplift"
