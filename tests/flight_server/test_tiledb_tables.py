"""TileDB tables: the layout on its own, and in the embedded store next to HDF5 tables.

The store tests run the same uploads, reads and queries over a real bridge
for ``format="hdf5"`` and ``format="tiledb"`` and compare the answers.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flight_protocol import columns as cols
from flight_protocol.messages import ROW_NUMBER_COLUMN, RowRange, TableTicket, UploadDescriptor
from flight_server.query import check_query
from tests.flight_server.test_roundtrip import EXPECTED_TYPES, all_types_table
from tests.flight_server.wire import action, error_code, read

tiledb = pytest.importorskip("tiledb")
from flight_server.backends.formats import tiledb as tiledb_layout  # noqa: E402

FORMATS = ["hdf5", "tiledb"]


def upload_as(client: flight.FlightClient, options: flight.FlightCallOptions, data: pa.Table,
              fmt: str, name: str = "t", batch_rows: int | None = None) -> dict:
    """do_put a table in the given storage format; returns the server's JSON answer."""
    command = UploadDescriptor(name, (("Image", 1),), format=fmt).encode()
    writer, reader = client.do_put(flight.FlightDescriptor.for_command(command), data.schema,
                                   options=options)
    with writer:
        for batch in data.to_batches(max_chunksize=batch_rows):
            writer.write_batch(batch)
        writer.done_writing()
        answer = reader.read()
    return json.loads(answer.to_pybytes())


def no_mask(data: pa.Table) -> pa.Table:
    return data.drop_columns(["mask"])


@pytest.fixture(scope="module")
def alice(connect):
    return connect("alice")


@pytest.fixture(scope="module")
def typed(alice):
    data = no_mask(all_types_table(25))
    return data, {fmt: upload_as(*alice, data, fmt, f"types {fmt}", batch_rows=7)["file_id"]
                  for fmt in FORMATS}


@pytest.fixture(scope="module")
def numbers(alice):
    n = 3000
    rng = np.random.default_rng(7)
    data = pa.table({
        "x": pa.array(np.arange(n)),
        "y": pa.array(rng.normal(size=n)),
        "flag": pa.array(rng.integers(0, 2, n).astype(bool)),
        "Roi Name": pa.array([f"röi {i % 13}" for i in range(n)]),
    })
    return data, {fmt: upload_as(*alice, data, fmt, f"numbers {fmt}", batch_rows=1000)["file_id"]
                  for fmt in FORMATS}


# -- the embedded store, both formats -----------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_column_type_round_trips(alice, typed, fmt):
    data, fids = typed
    got = read(*alice, file_id=fids[fmt])
    assert got.column(ROW_NUMBER_COLUMN).to_pylist() == list(range(len(data)))
    assert got.drop_columns([ROW_NUMBER_COLUMN]).to_pydict() == data.to_pydict()
    kinds = {f.name: cols.short_name(cols.column_type_of(f)) for f in got.schema
             if f.name != ROW_NUMBER_COLUMN}
    assert kinds == {k: v for k, v in EXPECTED_TYPES.items() if k != "mask"}


def test_tiledb_and_hdf5_tables_read_identically(alice, typed):
    _, fids = typed
    h5, tdb = (read(*alice, file_id=fids[f]) for f in FORMATS)
    assert tdb.equals(h5, check_metadata=True)
    columns = [action(*alice, "table_columns", TableTicket(file_id=fids[f]).encode())["columns"]
               for f in FORMATS]
    assert columns[0] == columns[1]


@pytest.mark.parametrize("fmt", FORMATS)
def test_selections_and_chunks(alice, numbers, fmt):
    data, fids = numbers
    got = read(*alice, file_id=fids[fmt], rows=(2999, 7, 3, 7), columns=("Roi Name", "x"),
               chunk_size=2)
    assert got.column(ROW_NUMBER_COLUMN).to_pylist() == [2999, 7, 3, 7]
    assert got.column("Roi Name").to_pylist() == [f"röi {i % 13}" for i in (2999, 7, 3, 7)]
    reader = alice[0].do_get(flight.Ticket(TableTicket(
        file_id=fids[fmt], rows=RowRange(10, 95), chunk_size=20).encode()), options=alice[1])
    assert [chunk.data.num_rows for chunk in reader] == [20, 20, 20, 20, 5]


QUERIES = [
    ("(x > 100) & (x < 180)", {}),
    ("y > limit", {"limit": 0.5}),
    ("flag & (x % 7 == 0)", {}),
    ('name == "röi 3"', {"name": "Roi Name"}),
    ('contains(name, "i 1")', {"name": "Roi Name"}),
    ("sqrt(abs(y)) < 0.2", {}),
    ("x < 0", {}),
]


@pytest.mark.parametrize(("query", "variables"), QUERIES)
def test_queries_match_hdf5(alice, numbers, query, variables):
    _, fids = numbers
    results = [read(*alice, file_id=fids[f], query=query, variables=variables, chunk_size=64)
               for f in FORMATS]
    assert results[1].equals(results[0])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("query", ["__import__('os').system('true')", "x.real > 1", "nope > 1",
                                   "x + 1"])
def test_unsafe_or_bad_queries_refused_alike(alice, numbers, fmt, query):
    _, fids = numbers
    with pytest.raises(flight.FlightError) as info:
        read(*alice, file_id=fids[fmt], query=query)
    assert error_code(info.value) == "invalid_argument"


def test_store_keeps_tiledb_tables_as_arrays(alice, bridge, numbers):
    _, fids = numbers
    paths = [bridge.store._disk_path(bridge.store.catalog.one(
        "SELECT path FROM original_files WHERE id = ?", (fids[f],))) for f in FORMATS]
    assert paths[0].is_file() and paths[1].is_dir()
    with tiledb.open(str(paths[1])) as array:
        assert array.meta["__version"] == "3" and "__initialized" in array.meta
        assert array.schema.sparse and array.schema.domain.dim(0).name == "__tiledb_rows"
    assert len(tiledb.array_fragments(str(paths[1]))) == 3  # one per 1000-row batch
    size = action(*alice, "table_size", TableTicket(file_id=fids["tiledb"]).encode())
    assert size["rows"] == 3000


def test_mask_columns_refused_for_tiledb(alice, bridge):
    data = all_types_table(3).select(["count", "mask"])
    with pytest.raises(flight.FlightError, match="MaskColumn") as info:
        upload_as(*alice, data, "tiledb", "masks")
    assert error_code(info.value) == "invalid_argument"
    assert not [p for p in bridge.store.tmp.iterdir() if p.suffix == ".tiledb"]


def test_unknown_format_refused(alice):
    class Odd(UploadDescriptor):
        def __post_init__(self) -> None:  # skip the client-side check
            pass

    command = Odd("t", (("Image", 1),), format="zarr").encode()
    with pytest.raises(flight.FlightError, match="unknown table format 'zarr'"):
        writer, reader = alice[0].do_put(flight.FlightDescriptor.for_command(command),
                                         pa.schema([("a", pa.int64())]), options=alice[1])
        with writer:
            writer.done_writing()
            reader.read()


# -- the layout on its own ----------------------------------------------------------------------
def test_writer_refuses_existing_path(tmp_path):
    stored = cols.omero_schema(pa.schema([("a", pa.int64())]))
    (tmp_path / "t.tiledb").mkdir()
    with pytest.raises(FileExistsError, match="never overwritten"):
        tiledb_layout.TileDBWriter(tmp_path / "t.tiledb", stored)


def test_reads_arrays_without_omero_column_metadata(tmp_path):
    """An array written the way omero2pandas' from_pandas does: types come from the dtypes."""
    uri = str(tmp_path / "plain.tiledb")
    dim = tiledb.Dim(name="__tiledb_rows", domain=(0, np.iinfo(np.uint64).max - 10_000),
                     tile=10_000, dtype=np.uint64)
    schema = tiledb.ArraySchema(domain=tiledb.Domain(dim), sparse=True, attrs=[
        tiledb.Attr(name="Image", dtype=np.int64), tiledb.Attr(name="area", dtype=np.float64),
        tiledb.Attr(name="label", dtype=np.str_, var=True)])
    tiledb.Array.create(uri, schema)
    with tiledb.open(uri, "w") as array:
        array[np.arange(3, dtype=np.uint64)] = {
            "Image": np.array([5, 6, 7]), "area": np.array([1.0, 2.0, 3.0]),
            "label": np.array(["a", "ß", ""], dtype=object)}
        array.meta["__version"] = "3"
    with tiledb_layout.TileDBReader(uri) as table:
        kinds = [cols.short_name(cols.column_type_of(f)) for f in table.schema]
        assert kinds == ["ImageColumn", "DoubleColumn", "StringColumn"]
        assert table.read_range(["label", "Image"], 1, 3).to_pydict() == {
            "label": ["ß", ""], "Image": [6, 7]}
        query = check_query("area >= 2", dict(zip(table.schema.names, [
            cols.column_type_of(f) for f in table.schema], strict=True)))
        assert table.where(query, 0, 3).tolist() == [1, 2]


def test_missing_tiledb_is_a_clear_refusal(monkeypatch, tmp_path):
    import sys

    from flight_server.errors import code_and_message

    monkeypatch.setitem(sys.modules, "tiledb", None)
    stored = cols.omero_schema(pa.schema([("a", pa.int64())]))
    with pytest.raises(tiledb_layout.TileDBUnavailable, match=r"omero-flight\[tiledb\]") as info:
        tiledb_layout.TileDBWriter(tmp_path / "t.tiledb", stored)
    assert code_and_message(info.value)[0] == "invalid_argument"
