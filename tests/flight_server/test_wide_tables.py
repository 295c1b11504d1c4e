"""Wide tables (issue 11, fault 3): what cannot fit HDF5's type header is refused up front.

An HDF5 OMERO.table is one compound type, written into one object header
message of at most 64 KiB; its size depends on the number and the length of
the column names (``columns.hdf5_header_size``). A CellProfiler-like export of
800 float columns with ~35-character names does not fit, 600 do.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest
import tables
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flight_protocol import columns as cols
from flight_protocol.messages import UploadDescriptor
from flight_server.backends.formats.hdf5 import _descriptor
from tests.conftest import connect_to
from tests.flight_server.wire import error_code, read

ROWS = 3


def _name(i: int, length: int) -> str:
    stem = f"Intensity_MeanIntensity_{i:04d}_"
    return (stem + "x" * length)[:length] if length >= len(stem) else f"{i}_{'y' * length}"


def _wide(columns: int, name_length: int) -> pa.Table:
    """``columns`` float columns with names of ``name_length`` characters, as CellProfiler's."""
    rng = np.random.default_rng(columns * 1000 + name_length)
    return pa.table({_name(i, name_length): pa.array(rng.random(ROWS))
                     for i in range(columns)})


def _put(conn: tuple, data: pa.Table, name: str) -> dict:
    client, options = conn
    descriptor = flight.FlightDescriptor.for_command(UploadDescriptor(name, ()).encode())
    writer, reader = client.do_put(descriptor, data.schema, options=options)
    with writer:
        writer.write_table(data)
        writer.done_writing()
        return json.loads(reader.read().to_pybytes())


def _tables_of(bridge) -> list[str]:
    return [t.file.name for t in bridge.store.list_tables(bridge.store.lookup_caller("root"))]


def test_cellprofiler_export_of_800_columns_is_refused_with_the_limit(bridge, connect):
    data = _wide(800, 35)
    before = _tables_of(bridge)
    with pytest.raises(flight.FlightError) as info:
        _put(connect("alice"), data, "cellprofiler-800")
    assert error_code(info.value) == "invalid_argument"
    message = json.loads(info.value.extra_info)["message"]
    size = cols.hdf5_header_size(cols.omero_schema(data.schema))
    assert f"{size:,}-byte" in message and "65,535 bytes" in message
    assert "800 columns" in message and "28,000 bytes" in message  # 800 names of 35 bytes
    assert "fewer columns or shorter column names" in message and "array columns" in message
    assert _tables_of(bridge) == before
    assert list(bridge.store.tmp.iterdir()) == []


def test_600_such_columns_are_stored_and_read_back(connect):
    data = _wide(600, 35)
    conn = connect("alice")
    answer = _put(conn, data, "cellprofiler-600")
    assert answer["rows"] == ROWS
    got = read(*conn, file_id=answer["file_id"], row_numbers=False)
    assert got.schema.names == data.schema.names
    assert got.cast(data.schema).equals(data)


def _creates_in_pytables(schema: pa.Schema) -> bool:
    """Whether PyTables/libhdf5 can create the table (in memory, nothing on disk)."""
    definition = {f.name: _descriptor(f, i) for i, f in enumerate(schema)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with tables.open_file("wide.h5", "w", driver="H5FD_CORE",
                                  driver_core_backing_store=0) as h5:
                h5.create_table("/", "t", definition)
        except tables.HDF5ExtError:
            return False
    return True


_KINDS = {"float": pa.float64(), "int": pa.int64(), "bool": pa.bool_(), "string": pa.string(),
          "floats3": pa.list_(pa.float32(), 3), "longs2": pa.list_(pa.int64(), 2),
          "mask": cols.MASK_TYPE}


def _schema(kinds: list[str], names: list[str]) -> pa.Schema:
    fields, masks = [], 0
    for i, name in enumerate(names):
        kind = kinds[i % len(kinds)]
        if kind == "mask":
            masks += 1
            kind = "float" if masks > 1 else kind
        fields.append(pa.field(name, _KINDS[kind]))
    stored = cols.omero_schema(pa.schema(fields))
    return cols.with_string_sizes(stored, {f.name: 4 for f in fields})


@st.composite
def _shapes(draw: st.DrawFn) -> pa.Schema:
    """Random column kinds, order and name lengths, with a column count near the limit."""
    kinds = draw(st.lists(st.sampled_from(sorted(_KINDS)), min_size=1, max_size=4, unique=True))
    length = draw(st.integers(8, 64))
    accents = draw(st.lists(st.integers(0, 2), min_size=8, max_size=8))
    names = [f"{i}_" + "é" * accents[i % 8] + "x" * (length - 1) for i in range(4000)]
    full = list(_schema(kinds, names))
    low, high = 1, len(full)  # the most columns that fit, by the rule
    while low < high:
        middle = (low + high + 1) // 2
        fits = cols.hdf5_header_size(pa.schema(full[:middle])) <= cols.HDF5_HEADER_LIMIT
        low, high = (middle, high) if fits else (low, middle - 1)
    count = draw(st.integers(max(1, low - 3), min(len(full), low + 3)))
    return pa.schema(full[:count])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_shapes())
def test_the_computed_size_matches_libhdf5(schema):
    """The rule agrees with libhdf5: a table fits exactly when PyTables can create it."""
    fits = cols.hdf5_header_size(schema) <= cols.HDF5_HEADER_LIMIT
    assert fits == _creates_in_pytables(schema)


@st.composite
def _uploads(draw: st.DrawFn) -> tuple[int, int]:
    length = draw(st.integers(8, 60))
    per_column = (length + 1 + 7) // 8 * 8 + 32 + 20  # a float64 member, version 1
    limit = (cols.HDF5_HEADER_LIMIT - 8) // per_column
    return draw(st.integers(max(1, limit - 25), limit + 25)), length


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(_uploads())
def test_tables_around_the_limit_are_stored_whole_or_refused(bridge, connect, shape):
    """Through the server: accepted and read back exactly, or refused as invalid_argument."""
    columns, length = shape
    data = _wide(columns, length)
    name = f"around-{columns}-{length}"
    conn = connect("bob")
    try:
        answer = _put(conn, data, name)
    except flight.FlightError as exc:
        assert error_code(exc) == "invalid_argument", exc
        assert "too wide for an HDF5 OMERO.table" in str(exc)
        assert name not in _tables_of(bridge)
        return
    got = read(*conn, file_id=answer["file_id"], row_numbers=False)
    assert got.cast(data.schema).equals(data)


def test_tiledb_tables_have_no_such_limit(bridge):
    pytest.importorskip("tiledb")
    data = _wide(800, 35)
    conn = connect_to(bridge, "alice")
    client, options = conn
    descriptor = flight.FlightDescriptor.for_command(
        UploadDescriptor("wide-tiledb", (), format="tiledb").encode())
    writer, reader = client.do_put(descriptor, data.schema, options=options)
    with writer:
        writer.write_table(data)
        writer.done_writing()
        answer = json.loads(reader.read().to_pybytes())
    got = read(*conn, file_id=answer["file_id"], row_numbers=False)
    assert got.cast(data.schema).equals(data)
