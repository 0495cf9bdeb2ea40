"""Load the champion model from the MLflow registry together with the feature service it was trained with."""

from __future__ import annotations

import logging

from feast import FeatureStore
from feast.errors import FeatureServiceNotFoundException
from mlflow.exceptions import MlflowException

from serving.features import FeatureClient
from serving.service import Champion
from training.registry import load_alias

log = logging.getLogger(__name__)


class FeatureServiceMissing(RuntimeError):
    """The champion was trained with a feature service that the Feast registry does not have."""


def load_champion(tracking_uri: str, model_name: str, alias: str, store: FeatureStore) -> Champion | None:
    """The champion and a feature client for its feature service; None (logged) when no model has the alias."""
    try:
        model, ref, feature_service = load_alias(tracking_uri, model_name, alias)
    except MlflowException as exc:
        log.error("no model %s@%s in %s (%s); serving the control action", model_name, alias, tracking_uri, exc)
        return None
    try:
        features = FeatureClient(store, feature_service)
    except FeatureServiceNotFoundException as exc:
        raise FeatureServiceMissing(
            f"{model_name} v{ref.version} was trained with feature service {feature_service!r}, which the Feast "
            "registry does not have; run `feast apply` (the feast_registry asset) or move the alias to a model "
            "whose feature service exists"
        ) from exc
    missing = sorted(set(model.feature_names) - set(features.feature_names))
    if missing:
        raise FeatureServiceMissing(f"feature service {feature_service!r} lacks features {missing} the model needs")
    return Champion(model=model, ref=ref, features=features)
