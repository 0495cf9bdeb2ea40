"""Open the Feast FeatureStore of this repo with the project's settings (registry path, Redis connection)."""

from __future__ import annotations

from pathlib import Path
from string import Template

import yaml
from feast import FeatureService, FeatureStore
from feast.repo_config import RepoConfig

from infra.settings import HyperliftSettings

REPO_PATH = Path(__file__).resolve().parent


def feature_store(
    redis_url: str, settings: HyperliftSettings | None = None, redis_timeout_s: float | None = None
) -> FeatureStore:
    """A FeatureStore reading `feature_store.yaml` with its ${...} values filled from `settings` and `redis_url`.

    `redis_timeout_s` bounds every online-store call and turns redis-py's retries off (the serving path).
    """
    settings = settings or HyperliftSettings()
    settings.feast_registry_path.parent.mkdir(parents=True, exist_ok=True)
    text = (REPO_PATH / "feature_store.yaml").read_text()
    # Substitute from our settings rather than os.environ so tests and processes can hold several stores at once.
    raw = yaml.safe_load(Template(text).substitute(settings.environment(redis_url, redis_timeout_s)))
    config = RepoConfig(**raw)
    config.repo_path = REPO_PATH
    return FeatureStore(repo_path=str(REPO_PATH), config=config)


def service_feature_names(service: FeatureService) -> list[str]:
    """Feature names of a feature service in its declared order (views in order, features in schema order)."""
    return [feature.name for projection in service.feature_view_projections for feature in projection.features]
