"""Lake ids in tests: below the raw layer the lake and Redis key users by their pseudonym under the home's pseudonym
key (feature_repo/pseudonyms.py), while requests, erasure and the raw layer use the raw id. These translate."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from feature_repo.pseudonyms import raw_ids
from infra import keys
from infra.keys import Pseudonymizer
from infra.settings import HyperliftSettings


def door(settings: HyperliftSettings) -> Pseudonymizer:
    """The home's current pseudonym key (the pipeline made it on its first run)."""
    return keys.pseudonymizers(path=keys.key_file(settings))[0]


def lake_id(settings: HyperliftSettings, user: int) -> int:
    """The id the home's lake and Redis hold for raw id `user`."""
    return door(settings)(int(user))


def raw_users(settings: HyperliftSettings, lake_ids: Iterable[int]) -> list[int]:
    """The raw ids behind lake ids, found among the home's CRM customers (`raw/customers`, the raw layer)."""
    customers = pd.read_parquet(settings.data_dir / "raw" / "customers.parquet")["user_id"]
    wanted = np.fromiter((int(i) for i in lake_ids), dtype=np.int64)
    return [int(u) for u in raw_ids(wanted, customers, door(settings))]
