"""The door of the pseudonymous lake: raw user ids become keyed pseudonyms for everything below the raw layer.

The raw layer (the landing folder, `raw/events`, `raw/customers`, `quarantine/`: rows as received) keeps the raw id.
Everything the pipeline derives from it is keyed by the user's pseudonym under the current `pseudonym` key
(`infra.keys.Pseudonymizer`: a 53-bit keyed hash, an int64 like the id, so dtypes, joins, Feast's entity and every
Redis key format stay as they are):

- batch: `validated_events` replaces `user_id` after validation (`validated/` and all below it: tiles, snapshots,
  folds, features, embeddings, training sets), the profile and the user list read `raw/customers` through it;
- stream: `POST /v1/events` replaces `user_id` of the accepted events before their tiles, seen markers and rows;
- serving: the decision service maps the request's `user_id` once, at its edge, and reads features, tiles, consent
  and item history by the pseudonym (`user_key`, the trace salt's hash of the raw id, stays the decision log's).

The key lives outside the lake (`infra/keys.py`); a rotation re-keys the lake and Redis (`infra/rekey.py`).
What knows who a pseudonym is: only the key and the raw layer (and the simulator, the outside world of the benches:
`raw_ids`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from infra import keys
from infra.keys import Pseudonymizer

USER_COLUMN = "user_id"


def lake_pseudonymizer(*, create: bool = True, path: Path | None = None) -> Pseudonymizer:
    """The current version of the pseudonym key: what everything new in the lake is keyed by. Made on first use
    (the pipeline and a dev service make it; `create=False` raises when the key file has none)."""
    found = keys.pseudonymizers(create=create, path=path)
    if not found:
        raise keys.KeysError(
            f"no pseudonym key in {path or keys.key_file()}: the lake is keyed by it. Point {keys.KEYS_FILE_ENV} at "
            "the key file the pipeline uses (it makes the key on its first run), or make one with "
            "`python -m infra.keys rotate pseudonym --reason 'first key'`"
        )
    return found[0]


def pseudonymize_ids(user_ids: np.ndarray | pd.Series, pseudonymizer: Pseudonymizer) -> np.ndarray:
    """Pseudonyms of an array of raw ids (int64), hashing each distinct id once."""
    ids = np.asarray(user_ids, dtype=np.int64)
    distinct, inverse = np.unique(ids, return_inverse=True)
    return pseudonymizer.many(distinct)[inverse].astype(np.int64, copy=False)


def pseudonymize(frame: pd.DataFrame, pseudonymizer: Pseudonymizer, column: str = USER_COLUMN) -> pd.DataFrame:
    """A copy of `frame` with its raw ids in `column` replaced by their pseudonyms (null ids stay null)."""
    out = frame.copy()
    if column not in out.columns or out.empty:
        return out
    values = out[column]
    present = values.notna().to_numpy()
    if present.all():
        out[column] = pseudonymize_ids(values.to_numpy(dtype=np.int64), pseudonymizer)
        return out
    mapped = pd.array([pd.NA] * len(out), dtype="Int64")
    mapped[present] = pseudonymize_ids(values[present].to_numpy(dtype=np.int64), pseudonymizer)
    out[column] = mapped
    return out


def raw_ids(pseudonyms: np.ndarray | pd.Series, known: np.ndarray, pseudonymizer: Pseudonymizer) -> np.ndarray:
    """The raw ids behind `pseudonyms`, found among the `known` raw ids (the simulator's users: the outside world,
    which knows who its users are); raises naming a pseudonym none of them has."""
    known = np.asarray(known, dtype=np.int64)
    back = pd.Series(known, index=pseudonymize_ids(known, pseudonymizer))
    back = back[~back.index.duplicated()]
    wanted = np.asarray(pseudonyms, dtype=np.int64)
    found = back.reindex(wanted)
    if found.isna().any():
        missing = wanted[found.isna().to_numpy()][0]
        raise KeyError(f"pseudonym {missing} is none of the {len(known)} known users' under key version "
                       f"{pseudonymizer.version}: was the lake keyed by another pseudonym key (a rotation, "
                       "another HYPERLIFT_KEYS_FILE)?")
    return found.to_numpy(dtype=np.int64)


def with_raw_ids(frame: pd.DataFrame, known: np.ndarray | pd.Series, key_path: Path | None = None,
                 column: str = USER_COLUMN) -> pd.DataFrame:
    """A copy of a lake table below the raw layer with the pseudonyms in `column` replaced by the raw ids behind
    them, found among the `known` raw ids under the current pseudonym key of the key file at `key_path` (default
    `keys.key_file()`; a home of its own: `keys.key_file(HyperliftSettings(home=...))`). The way back for the outside
    world (the simulator's truth, indexed by raw id); raises as `raw_ids` for a pseudonym none of `known` has."""
    out = frame.copy()
    if column in out.columns and not out.empty:
        out[column] = raw_ids(out[column].to_numpy(), known, lake_pseudonymizer(create=False, path=key_path))
    return out
