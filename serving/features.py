"""Online feature reads through the Feast feature service the champion model was trained with."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import redis
from feast import FeatureStore

from feature_repo.store import service_feature_names


class FeatureStoreUnavailable(RuntimeError):
    """The online store could not be read (Redis down, timed out)."""


@dataclass(frozen=True)
class FeatureRead:
    """Feature values of one user in model order; `found` is False when the store knows nothing of the user."""

    values: np.ndarray
    found: bool
    by_name: dict[str, float | None]


class FeatureClient:
    """Reads one user's features from the online store via a named FeatureService."""

    def __init__(self, store: FeatureStore, feature_service: str):
        self.store = store
        self.feature_service_name = feature_service
        self.service = store.get_feature_service(feature_service)
        self.feature_names = service_feature_names(self.service)

    def read(self, user_id: int, order: list[str]) -> FeatureRead:
        """Values for `user_id` in the column order `order` (missing values are NaN)."""
        try:
            response = self.store.get_online_features(features=self.service, entity_rows=[{"user_id": user_id}])
        except redis.exceptions.RedisError as exc:
            raise FeatureStoreUnavailable(f"online store read failed: {exc}") from exc
        row = {name: values[0] for name, values in response.to_dict().items() if name != "user_id"}
        values = np.array([np.nan if row.get(n) is None else float(row[n]) for n in order], dtype=np.float32)
        return FeatureRead(values=values, found=any(v is not None for v in row.values()), by_name=row)
