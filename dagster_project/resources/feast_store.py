"""Feast as a Dagster resource: the project's FeatureStore and Feast objects for one data folder and Redis."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from feast import FeatureStore

from feature_repo.definitions import FeatureRepo, build_repo
from feature_repo.store import feature_store
from infra.settings import HyperliftSettings


class FeastResource(dg.ConfigurableResource):
    """Opens the Feast store (file registry, file offline store, Redis online store)."""

    redis_url: str
    home: str

    def settings(self) -> HyperliftSettings:
        """Settings pointing at this resource's home folder."""
        return HyperliftSettings(home=Path(self.home))

    def store(self) -> FeatureStore:
        """A FeatureStore bound to this home folder and Redis."""
        return feature_store(self.redis_url, self.settings())

    def repo(self) -> FeatureRepo:
        """The Feast objects whose sources live in this home folder's data directory."""
        return build_repo(self.settings().data_dir)
