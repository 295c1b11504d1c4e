"""Reads of column subsets of wide-row tables (issue 11, fault 5): exact, piece by piece.

``H5Reader`` reads whole HDF5 rows at most ``READ_BYTES`` at a time and keeps
only the requested columns. Rows of ~4 KB make a piece about a thousand rows,
so these reads cross several pieces; every subset, range and row list (any
order, repeats) must give exactly the rows written. Memory is measured in
``bench/memory.py`` (see ``bench/results/README.md``), not here.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flight_protocol import columns as cols
from flight_server.backends.formats.hdf5 import READ_BYTES, H5Reader, H5Writer

ROWS = 3_500
WIDTH = 4_000


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, H5Reader]:
    rng = np.random.default_rng(5)
    data = pa.table({
        "n": pa.array(np.arange(ROWS, dtype=np.int64) * 3),
        "text": pa.array([f"{i:06d}-" + "t" * int(rng.integers(0, WIDTH - 8))
                          for i in range(ROWS)]),
        "x": pa.array(rng.random(ROWS)),
        "flag": pa.array(rng.random(ROWS) < 0.5),
        "v": pa.FixedSizeListArray.from_arrays(pa.array(rng.random(ROWS * 2)), 2),
    })
    schema = cols.with_string_sizes(cols.omero_schema(data.schema), {"text": WIDTH})
    path = tmp_path_factory.mktemp("wide-reads") / "wide.h5"
    writer = H5Writer(path, schema)
    for batch in data.to_batches(max_chunksize=700):
        writer.append(cols.conform_batch(batch, schema))
    writer.close()
    reader = H5Reader(path)
    assert reader._rows_per_read < ROWS // 3  # several pieces per whole read
    assert reader._rows_per_read == READ_BYTES // reader._table.rowsize
    yield data.cast(reader.schema), reader
    reader.close()


_SUBSETS = st.lists(st.sampled_from(["n", "text", "x", "flag", "v"]), min_size=1,
                    unique=True)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=_SUBSETS, start=st.integers(0, ROWS), length=st.integers(0, ROWS))
def test_ranges_of_column_subsets(wide, names, start, length):
    data, reader = wide
    got = reader.read_range(names, start, start + length)
    expected = data.select(names).slice(start, length)
    assert got.schema.names == names
    assert pa.Table.from_batches([got]).equals(expected)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=_SUBSETS, rows=st.lists(st.integers(0, ROWS - 1), max_size=3_000))
def test_row_lists_of_column_subsets(wide, names, rows):
    data, reader = wide
    got = reader.read_rows(names, np.asarray(rows, dtype=np.int64))
    expected = data.select(names).take(pa.array(rows, type=pa.int64()))
    assert pa.Table.from_batches([got]).equals(expected)
