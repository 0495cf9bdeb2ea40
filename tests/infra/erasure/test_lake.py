"""infra.erasure.lake: which rows of a user-id column are the subject's, whatever integer type the column has."""

from __future__ import annotations

import pyarrow as pa
import pytest

from infra.erasure.lake import id_mask
from infra.erasure.subject import Subject
from infra.keys import Pseudonymizer

SUBJECT = Subject.of(7, "salt", pseudonymizers=(Pseudonymizer("ab" * 32, 1),))
PSEUDONYM = SUBJECT.lake_ids[0]


@pytest.mark.parametrize("kind", [pa.int8(), pa.int16(), pa.int32(), pa.uint8(), pa.uint32(), pa.int64(), pa.uint64()])
def test_a_narrow_column_matches_the_raw_id_and_skips_pseudonyms_it_cannot_hold(kind):
    column = pa.chunked_array([pa.array([7, 8, None, 7], type=kind)])
    assert id_mask(column, SUBJECT).tolist() == [True, False, False, True]


def test_a_wide_column_matches_the_pseudonym_and_a_text_column_both():
    assert PSEUDONYM > 2**31  # too large for an int32 column: the case above
    wide = pa.chunked_array([pa.array([PSEUDONYM, 7, PSEUDONYM + 1, None], type=pa.int64())])
    assert id_mask(wide, SUBJECT).tolist() == [True, True, False, False]
    text = pa.chunked_array([pa.array([str(PSEUDONYM), " 7", "7x", None])])
    assert id_mask(text, SUBJECT).tolist() == [True, True, False, False]
