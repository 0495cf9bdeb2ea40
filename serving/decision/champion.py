"""Load the champion models the surfaces use, with the feature service each was trained with, and keep them fresh."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from feast import FeatureStore
from feast.errors import FeatureServiceNotFoundException
from feast.infra.online_stores.redis import _versioned_fv_name
from mlflow.exceptions import MlflowException

from feature_repo.freshness import MissingFreshnessContract, contract_of
from feature_repo.versions import pin_problem
from infra.settings import masked_url

from serving.core.polling import Poller
from serving.store.features import FeatureClient
from serving.decision.service import Champion, DecisionService, ViewFreshness
from serving.decision.surfaces import PolicyConfig
from training.learners.base import single_threaded
from training.lifecycle import alias_version
from training.registry import load_alias, view_pins_of

log = logging.getLogger(__name__)

ModelKey = tuple[str, str]  # (registered model name, alias)


class FeatureServiceMissing(RuntimeError):
    """A model was trained with a feature service (or view versions) that the Feast registry (or a surface) does
    not accept."""


def load_champion(tracking_uri: str, model_name: str, alias: str, store: FeatureStore) -> Champion | None:
    """The aliased model and a feature client for its feature service; None (logged) when no model has the alias."""
    try:
        model, ref, feature_service = load_alias(tracking_uri, model_name, alias)
    except MlflowException as exc:
        log.error(
            "no model %s@%s in %s (%s); serving the neutral action", model_name, alias, masked_url(tracking_uri), exc
        )
        return None
    try:
        # The pinned view versions first: a client of a service whose views are gone or changed must not be built.
        problem = pin_problem(store, feature_service, view_pins_of(tracking_uri, model_name, ref.version))
        if problem is not None:
            raise FeatureServiceMissing(f"{model_name} v{ref.version} {problem}")
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
    try:
        freshness = view_freshness(store, features)
    except MissingFreshnessContract as exc:
        raise MissingFreshnessContract(
            f"{model_name} v{ref.version} reads feature service {feature_service!r}: {exc}"
        ) from exc
    single_threaded(model.learner)  # one user per call: no OpenMP team spinning on the cores other requests need
    return Champion(model=model, ref=ref, features=features, freshness=freshness)


def view_freshness(store: FeatureStore, features: FeatureClient) -> tuple[ViewFreshness, ...]:
    """The freshness contract of every view of the client's feature service, as the Feast registry declares it;
    raises MissingFreshnessContract for a view without one (every view the service reads must declare one)."""
    out = []
    for projection in features.service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        contract = contract_of(view)
        out.append(ViewFreshness(
            name=view.name, key=_versioned_fv_name(view, store.config),  # the key FeatureClient's reads use
            features=tuple(f.name for f in projection.features), max_staleness=contract.max_staleness,
            on_stale=contract.on_stale,
        ))
    return tuple(out)


def check_against_surfaces(key: ModelKey, champion: Champion, config: PolicyConfig) -> None:
    """Every surface scored by `key` must name the model's feature service and only actions the model knows."""
    known = {champion.model.control, *champion.model.treatments}
    for surface in config.surfaces.values():
        if (surface.model.name, surface.model.alias) != key:
            continue
        served = champion.features.feature_service_name
        if surface.feature_service != served:
            raise FeatureServiceMissing(
                f"surface {surface.name!r} reads feature service {surface.feature_service!r} but "
                f"{key[0]}@{key[1]} (v{champion.ref.version}) was trained on {served!r}; change the surface file or "
                "move the alias to a model trained on the surface's feature service"
            )
        unknown = sorted(surface.actions_named() - known)
        if unknown:
            raise FeatureServiceMissing(
                f"surface {surface.name!r} names actions {unknown} that {key[0]} v{champion.ref.version} does not "
                f"score; it knows {sorted(known)}"
            )


def load_champions(tracking_uri: str, config: PolicyConfig, store: FeatureStore) -> dict[ModelKey, Champion | None]:
    """One champion per (model, alias) the surfaces use, each checked against those surfaces."""
    champions: dict[ModelKey, Champion | None] = {}
    for key in model_keys(config):
        champion = load_champion(tracking_uri, *key, store)
        if champion is not None:
            check_against_surfaces(key, champion, config)
        champions[key] = champion
    return champions


def model_keys(config: PolicyConfig) -> list[ModelKey]:
    """The distinct (model, alias) pairs of the surfaces."""
    return sorted({(s.model.name, s.model.alias) for s in config.surfaces.values()})


class ChampionWatcher(Poller):
    """Polls the registry aliases and swaps in newly aliased models without dropping a request.

    A request reads `service.champions[key]` once and keeps that object to the end, so replacing the entry is
    atomic for it. A version that fails to load or to pass the surface checks is counted and the current one keeps
    serving; when an alias disappears the last loaded model keeps serving too (safer than falling back for all).
    """

    def __init__(
        self, service: DecisionService, tracking_uri: str, keys: Iterable[ModelKey], store: FeatureStore,
        interval_s: float,
    ):
        self.service = service
        self.tracking_uri = tracking_uri
        self.keys = list(keys)
        self.store = store
        super().__init__(interval_s, "champion-watcher")

    def refresh(self) -> int:
        """Swap in every aliased version that differs from the one serving; returns how many swapped."""
        return sum(self._refresh(key) for key in self.keys)

    def _refresh(self, key: ModelKey) -> bool:
        serving = self.service.champions.get(key)
        current = serving.ref.version if serving else None
        try:
            version = alias_version(self.tracking_uri, *key)
            if version is None or version == current:
                return False
            champion = load_champion(self.tracking_uri, *key, self.store)
            if champion is not None:
                check_against_surfaces(key, champion, self.service.config)
        except (MlflowException, FeatureServiceMissing, OSError, ValueError) as exc:
            self.service.metrics.model_refresh_failures.inc()
            log.error("could not load %s@%s (keeping v%s): %s", *key, current, exc)
            return False
        if champion is None:
            return False
        self.service.champions[key] = champion
        self.service.metrics.model_swaps.inc()
        log.info("%s@%s: now serving v%s (was v%s)", *key, champion.ref.version, current)
        return True
