"""Load the champion model from the MLflow registry together with the feature service it was trained with."""

from __future__ import annotations

import logging
import threading

from feast import FeatureStore
from feast.errors import FeatureServiceNotFoundException
from mlflow.exceptions import MlflowException

from serving.features import FeatureClient
from serving.service import Champion, DecisionService
from training.lifecycle import alias_version
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


class ChampionWatcher:
    """Polls the registry alias and swaps in a newly aliased model without dropping a request.

    A request reads `service.champion` once and keeps that object to the end, so replacing the reference is
    atomic for it. A version that fails to load is counted and the current champion keeps serving; when the alias
    disappears the last loaded champion keeps serving too (safer than falling back for every user).
    """

    def __init__(
        self, service: DecisionService, tracking_uri: str, model_name: str, alias: str, store: FeatureStore,
        interval_s: float,
    ):
        self.service = service
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.alias = alias
        self.store = store
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Load and swap in the aliased version if it differs from the one serving; True when it swapped."""
        current = self.service.champion.ref.version if self.service.champion else None
        try:
            version = alias_version(self.tracking_uri, self.model_name, self.alias)
            if version is None or version == current:
                return False
            champion = load_champion(self.tracking_uri, self.model_name, self.alias, self.store)
        except (MlflowException, FeatureServiceMissing, OSError, ValueError) as exc:
            self.service.metrics.model_refresh_failures += 1
            log.error("could not load %s@%s (keeping v%s): %s", self.model_name, self.alias, current, exc)
            return False
        if champion is None:
            return False
        self.service.champion = champion
        self.service.metrics.model_swaps += 1
        log.info("%s@%s: now serving v%s (was v%s)", self.model_name, self.alias, champion.ref.version, current)
        return True

    def start(self) -> None:
        """Poll in a daemon thread every `interval_s` seconds (not at all when 0)."""
        if self.interval_s <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="champion-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.refresh()

    def stop(self) -> None:
        """Stop polling and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
