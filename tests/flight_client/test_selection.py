"""Row lists as a read's selection: checked, whatever iterable they come in, before sending."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flight_client import errors
from flight_client.selection import _row_selection
from flight_protocol.messages import RowRange


@given(st.lists(st.integers(0, 2**62), max_size=50))
def test_plain_rows_pass_as_they_are(rows):
    assert _row_selection(rows) == tuple(rows)
    assert _row_selection(np.asarray(rows, dtype=np.int64)) == tuple(rows)
    assert _row_selection(iter(rows)) == tuple(rows)


def test_numpy_scalars_and_unsigned_arrays_become_ints():
    got = _row_selection([np.int64(3), np.uint32(1), 2])
    assert got == (3, 1, 2) and all(type(r) is int for r in got)
    assert _row_selection(np.array([5, 0], dtype=np.uint16)) == (5, 0)


def test_a_range_is_sent_as_a_range():
    assert _row_selection(range(2, 9)) == RowRange(2, 9)


@pytest.mark.parametrize(("rows", "words"), [
    ([1, True], "integers, got True"),
    ([1, 2.0], "integers, got 2.0"),
    ([0, -4], "not be negative, got -4"),
    (np.array([1, -1]), "not be negative, got -1"),
    (np.array([1.5]), "integers, got 1.5"),
    (np.array([True]), "integers, got True"),
    ([1, "2"], "integers, got '2'"),
    ("12", "iterable of row numbers"),
])
def test_bad_rows_are_refused_naming_the_first_bad_one(rows, words):
    with pytest.raises(errors.InvalidRequest, match=words):
        _row_selection(rows)
