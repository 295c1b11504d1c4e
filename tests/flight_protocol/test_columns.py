"""Fixed-width HDF5 strings into Arrow: what numpy (and so OMERO.tables) hands out."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flight_protocol.columns import fixed_width_strings, from_numpy, omero_schema

VALUES = st.lists(st.text(st.characters(codec="utf-8"), max_size=6), max_size=30)


@given(VALUES, st.integers(0, 8))
def test_strings_read_as_numpy_gives_them(values, extra):
    encoded = [v.encode() for v in values]
    width = max([len(e) for e in encoded] + [1]) + extra
    stored = np.array(encoded, dtype=f"S{width}")
    expected = [b.decode() for b in stored.tolist()]  # numpy drops trailing NULs only
    got = fixed_width_strings(stored)
    assert got.type == pa.string()
    assert got.to_pylist() == expected


def test_a_nul_inside_a_value_is_kept_and_padding_dropped():
    stored = np.array([b"a\x00b", b"ok\x00\x00", b"", "é".encode()], dtype="S5")
    assert fixed_width_strings(stored).to_pylist() == ["a\x00b", "ok", "", "é"]


def test_strided_and_empty_arrays():
    stored = np.array([b"x", b"y", b"z"], dtype="S3")
    assert fixed_width_strings(stored[::2]).to_pylist() == ["x", "z"]
    assert fixed_width_strings(stored[:0]).to_pylist() == []
    records = np.array([(1, b"ab")], dtype=[("n", "i8"), ("s", "S4")])
    assert fixed_width_strings(records["s"]).to_pylist() == ["ab"]  # a field of whole rows


def test_invalid_utf8_is_refused():
    with pytest.raises(pa.ArrowInvalid):
        fixed_width_strings(np.array([b"ok", b"\xff\xfe"], dtype="S2"))


def test_from_numpy_reads_string_columns_this_way():
    field = omero_schema(pa.schema([("s", pa.string())])).field("s")
    stored = np.array([b"a\x00b", b"cd"], dtype="S4")
    assert from_numpy(stored, field).to_pylist() == ["a\x00b", "cd"]
