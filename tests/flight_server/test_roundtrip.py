"""Round trips over a real server: every column type, selections, queries, endpoints, files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flight_protocol import columns as cols
from flight_protocol.messages import (
    ROW_NUMBER_COLUMN,
    FileTicket,
    FileUploadDescriptor,
    RowRange,
    TableTicket,
    encode_body,
)
from tests.conftest import connect_to, start_bridge
from tests.flight_server.wire import action, read, upload


def all_types_table(n: int = 7) -> pa.Table:
    rng = np.random.default_rng(1)
    df = pd.DataFrame({
        "count": rng.integers(-10**12, 10**12, n),
        "value": rng.normal(size=n),
        "label": [f"ünïcode ✓ {i}" * (i % 3) for i in range(n)],
        "Roi Name": [f"roi {i}" for i in range(n)],
        "flag": rng.integers(0, 2, n).astype(bool),
        "image": np.arange(n) + 100, "roi": np.arange(n) + 200, "well": np.arange(n) + 300,
        "plate": np.arange(n) + 400, "dataset": np.arange(n) + 500,
    })
    t = pa.Table.from_pandas(df, preserve_index=False)
    file_field = pa.field("file", pa.int64(),
                          metadata={b"omero.column_type": b"FileColumn"})
    t = t.append_column(file_field, pa.array(np.arange(n) + 600))
    t = t.append_column("longs", pa.FixedSizeListArray.from_arrays(
        pa.array(np.arange(3 * n, dtype=np.int64)), 3))
    t = t.append_column("floats", pa.FixedSizeListArray.from_arrays(
        pa.array(np.linspace(0, 1, 2 * n, dtype=np.float32)), 2))
    t = t.append_column("doubles", pa.FixedSizeListArray.from_arrays(
        pa.array(np.linspace(0, 1, 4 * n)), 4))
    masks = [{"imageId": i, "theZ": i % 2, "theT": 0, "x": 1.5 * i, "y": 2.0, "w": 3.0,
              "h": 4.0, "bytes": bytes([i, 255, 0]) * i} for i in range(n)]
    return t.append_column("mask", pa.array(masks, type=cols.MASK_TYPE))


EXPECTED_TYPES = {
    "count": "LongColumn", "value": "DoubleColumn", "label": "StringColumn",
    "Roi Name": "StringColumn", "flag": "BoolColumn", "image": "ImageColumn",
    "roi": "RoiColumn", "well": "WellColumn", "plate": "PlateColumn",
    "dataset": "DatasetColumn", "file": "FileColumn", "longs": "LongArrayColumn",
    "floats": "FloatArrayColumn", "doubles": "DoubleArrayColumn", "mask": "MaskColumn",
}


#: An image id no other test module links to (the bridge is shared by the session).
TYPED_IMAGE = 910_001


@pytest.fixture(scope="module")
def alice(connect):
    return connect("alice")


@pytest.fixture(scope="module")
def typed(alice):
    data = all_types_table()
    answer = upload(*alice, data, "all types", links=[("Image", TYPED_IMAGE)], batch_rows=3)
    return data, answer


def test_every_column_type_round_trips(alice, typed):
    data, answer = typed
    assert answer["rows"] == len(data) and answer["v"] == 1
    got = read(*alice, file_id=answer["file_id"])
    assert got.column_names == [ROW_NUMBER_COLUMN, *data.column_names]
    assert got.column(ROW_NUMBER_COLUMN).to_pylist() == list(range(len(data)))
    assert got.drop_columns([ROW_NUMBER_COLUMN]).to_pydict() == data.to_pydict()
    kinds = {f.name: cols.short_name(cols.column_type_of(f)) for f in got.schema
             if f.name != ROW_NUMBER_COLUMN}
    assert kinds == EXPECTED_TYPES
    by_annotation = read(*alice, annotation_id=answer["annotation_id"], row_numbers=False)
    assert by_annotation.to_pydict() == data.to_pydict()
    columns = action(*alice, "table_columns", TableTicket(file_id=answer["file_id"]).encode())
    assert [c["type"] for c in columns["columns"]] == list(EXPECTED_TYPES.values())


def test_pandas_dtypes_survive(alice, typed):
    data, answer = typed
    df = read(*alice, file_id=answer["file_id"], row_numbers=False).to_pandas()
    assert df["count"].dtype == np.int64 and df["value"].dtype == np.float64
    assert df["flag"].dtype == bool and df["image"].dtype == np.int64


def test_empty_one_column_and_wide_tables(alice):
    empty = pa.table({"a": pa.array([], pa.int64()), "s": pa.array([], pa.string())})
    answer = upload(*alice, empty, "empty")
    got = read(*alice, file_id=answer["file_id"], row_numbers=False)
    assert answer["rows"] == 0 and got.num_rows == 0 and got.column_names == ["a", "s"]

    one = pa.table({"only": pa.array([3.5, float("nan"), -1.0])})
    got = read(*alice, file_id=upload(*alice, one, "one")["file_id"], row_numbers=False)
    assert np.allclose(got["only"].to_numpy(), one["only"].to_numpy(), equal_nan=True)

    wide = pa.table({f"c{i}": pa.array(np.arange(50) * i) for i in range(200)})
    answer = upload(*alice, wide, "wide")
    assert read(*alice, file_id=answer["file_id"], row_numbers=False).equals(
        wide.cast(read(*alice, file_id=answer["file_id"], row_numbers=False).schema))
    size = action(*alice, "table_size", TableTicket(file_id=answer["file_id"]).encode())
    assert (size["rows"], size["columns"]) == (50, 200)


@pytest.fixture(scope="module")
def numbers(alice):
    n = 1000
    data = pa.table({"x": pa.array(np.arange(n)), "y": pa.array(np.arange(n) * 0.5),
                     "Roi Name": pa.array([f"r{i % 10}" for i in range(n)])})
    return data, upload(*alice, data, "numbers")["file_id"]


def test_column_selection_keeps_table_order(alice, numbers):
    _, fid = numbers
    got = read(*alice, file_id=fid, columns=("Roi Name", "x"))
    assert got.column_names == [ROW_NUMBER_COLUMN, "x", "Roi Name"]


def test_row_list_in_given_order_with_row_numbers(alice, numbers):
    _, fid = numbers
    got = read(*alice, file_id=fid, rows=(7, 3, 999, 3), columns=("x",), chunk_size=2)
    assert got.column(ROW_NUMBER_COLUMN).to_pylist() == [7, 3, 999, 3]
    assert got.column("x").to_pylist() == [7, 3, 999, 3]


def test_row_range_in_small_chunks(alice, numbers):
    _, fid = numbers
    reader = alice[0].do_get(flight.Ticket(TableTicket(
        file_id=fid, rows=RowRange(10, 95), chunk_size=20).encode()), options=alice[1])
    batches = [chunk.data for chunk in reader]
    assert [b.num_rows for b in batches] == [20, 20, 20, 20, 5]
    assert pa.Table.from_batches(batches)["x"].to_pylist() == list(range(10, 95))


def test_query_with_variables(alice, numbers):
    data, fid = numbers
    got = read(*alice, file_id=fid, query="(x >= lo) & (y < hi)", variables={"lo": 10, "hi": 20})
    assert got["x"].to_pylist() == list(range(10, 40))
    assert got[ROW_NUMBER_COLUMN].to_pylist() == list(range(10, 40))
    got = read(*alice, file_id=fid, query="(name == 'r3') & (x < 100)",
               variables={"name": "Roi Name"})
    assert got["x"].to_pylist() == list(range(3, 100, 10))
    got = read(*alice, file_id=fid, query="x < 0")
    assert got.num_rows == 0 and got.schema.names[0] == ROW_NUMBER_COLUMN


def test_endpoint_splitting_covers_the_table(tmp_path):
    bridge = start_bridge(tmp_path / "store", split_rows=300)
    try:
        client, options = connect_to(bridge, "alice")
        data = pa.table({"x": pa.array(np.arange(1000))})
        fid = upload(client, options, data, "split")["file_id"]
        descriptor = flight.FlightDescriptor.for_command(TableTicket(file_id=fid).encode())
        info = client.get_flight_info(descriptor, options=options)
        assert info.total_records == 1000 and len(info.endpoints) == 4
        parts = [client.do_get(e.ticket, options=options).read_all() for e in info.endpoints]
        assert pa.concat_tables(parts)["x"].to_pylist() == list(range(1000))
        query = TableTicket(file_id=fid, query="x > 5").encode()
        info = client.get_flight_info(flight.FlightDescriptor.for_command(query),
                                      options=options)
        assert len(info.endpoints) == 1 and info.total_records == -1
        schema = client.get_schema(descriptor, options=options).schema
        assert schema.names == [ROW_NUMBER_COLUMN, "x"]
    finally:
        bridge.server.shutdown()


def test_plain_files_and_listing(connect, bridge, typed):
    client, options = connect("alice")
    payload = b"a,b\n" + b"".join(b"%d,%d\n" % (i, i * i) for i in range(50_000))
    descriptor = flight.FlightDescriptor.for_command(
        FileUploadDescriptor("data.csv", links=[("Dataset", 9)]).encode())
    schema = pa.schema([("data", pa.binary())])
    writer, reader = client.do_put(descriptor, schema, options=options)
    with writer:
        for i in range(0, len(payload), 100_000):
            writer.write_batch(pa.record_batch([pa.array([payload[i:i + 100_000]])],
                                               schema=schema))
        writer.done_writing()
        answer = reader.read().to_pybytes()
    info = json.loads(answer)
    assert info["size"] == len(payload) and info["mimetype"] == "text/csv"
    stream = client.do_get(flight.Ticket(FileTicket(file_id=info["file_id"],
                                                    chunk_size=65536).encode()), options=options)
    got = b"".join(v.as_py() for chunk in stream for v in chunk.data.column(0))
    assert got == payload
    seeded = bridge.store.add_file("bob", b"x\n1\n", "seed.csv.gz", mimetype="application/gzip")
    stream = client.do_get(flight.Ticket(FileTicket(file_id=seeded.file_id).encode()),
                           options=options)
    assert b"".join(v.as_py() for c in stream for v in c.data.column(0)) == b"x\n1\n"

    listing = action(client, options, "list_tables",
                     encode_body(object_type="image", object_id=TYPED_IMAGE))
    assert [t["name"] for t in listing["tables"]] == ["all types"]
    assert listing["tables"][0]["links"] == [["Image", TYPED_IMAGE]]
    flights = list(client.list_flights(encode_body(object_type="Image", object_id=TYPED_IMAGE),
                                       options=options))
    assert len(flights) == 1 and flights[0].total_records == 7
    assert TableTicket.from_json(json.loads(flights[0].descriptor.command)).file_id == \
        typed[1]["file_id"]
    who = action(client, options, "whoami")
    assert who["username"] == "alice" and not who["admin"]
    version = action(client, options, "version")
    assert version["protocol"] == 1 and version["backend"] == "local"
    assert action(client, options, "health")["status"] == "ok"
