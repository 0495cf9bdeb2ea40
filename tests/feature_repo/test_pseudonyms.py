"""feature_repo.pseudonyms: a lake table's pseudonyms map back to the simulator's raw ids under the key they were
made with, and a key other than the lake's says so instead of indexing the wrong users."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feature_repo.pseudonyms import lake_pseudonymizer, pseudonymize, with_raw_ids
from infra import keys


@pytest.fixture
def key_path(tmp_path):
    """A key file of its own, with a pseudonym key made in it."""
    path = tmp_path / "keys" / "keys.json"
    lake_pseudonymizer(path=path)
    return path


def test_a_lake_table_gets_its_raw_ids_back_and_keeps_the_rest(key_path):
    raw = pd.DataFrame({"user_id": np.array([7, 3, 7, 11], dtype=np.int64), "score": [0.1, 0.2, 0.3, 0.4]})
    lake = pseudonymize(raw, lake_pseudonymizer(create=False, path=key_path))
    assert not np.array_equal(lake["user_id"], raw["user_id"])
    back = with_raw_ids(lake, np.arange(20), key_path)
    pd.testing.assert_frame_equal(back, raw)
    assert lake["user_id"].tolist() != back["user_id"].tolist()  # a copy: the lake frame stays as it was


def test_another_key_or_an_unknown_user_is_an_error_naming_the_pseudonym(key_path, tmp_path):
    lake = pseudonymize(pd.DataFrame({"user_id": [5]}), lake_pseudonymizer(create=False, path=key_path))
    other = tmp_path / "other" / "keys.json"
    lake_pseudonymizer(path=other)
    with pytest.raises(KeyError, match=f"pseudonym {lake['user_id'].iloc[0]} is none of the 20 known users'"):
        with_raw_ids(lake, np.arange(20), other)
    with pytest.raises(KeyError, match="none of the 3 known users'"):
        with_raw_ids(lake, np.arange(3), key_path)


def test_without_a_key_it_says_how_to_get_one_and_an_empty_frame_needs_none(tmp_path):
    missing = tmp_path / "nowhere" / "keys.json"
    with pytest.raises(keys.KeysError, match="no pseudonym key"):
        with_raw_ids(pd.DataFrame({"user_id": [1]}), np.arange(3), missing)
    empty = pd.DataFrame({"user_id": pd.Series([], dtype=np.int64)})
    pd.testing.assert_frame_equal(with_raw_ids(empty, np.arange(3), missing), empty)
