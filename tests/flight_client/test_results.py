"""Connection does the work; a read is one ReadResult; the module functions are thin wrappers."""

from __future__ import annotations

import inspect
import json
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pyarrow as pa
import pytest

import flight_client
from flight_client.results import ReadResult
from flight_protocol.messages import PACKED_ROWS, ROW_NUMBER_COLUMN, TableTicket


def test_a_read_is_planned_once_and_read_once(table, conn):
    result = conn.read(file_id=table.file_id, column_names=["id", "label"])
    assert isinstance(result, ReadResult) and "not read yet" in repr(result)
    assert result.schema.names == [ROW_NUMBER_COLUMN, "id", "label"]
    assert result.num_rows == 300 and len(result.endpoints) >= 1
    df = result.to_pandas()
    pd.testing.assert_frame_equal(df, table.frame[["id", "label"]], check_index_type=False)
    with pytest.raises(flight_client.InvalidRequest, match="already consumed by to_pandas"):
        result.to_arrow()


@pytest.mark.parametrize("output", ["to_arrow", "to_reader", "to_polars", "to_duckdb"])
def test_every_output_of_one_read(table, conn, output):
    result = conn.read(file_id=table.file_id, rows=[4, 1], row_numbers=False)
    data = getattr(result, output)()
    if output == "to_reader":
        data = data.read_all()
    elif output == "to_polars":
        data = data.to_arrow()
    elif output == "to_duckdb":
        data = data.arrow()
        data = data.read_all() if isinstance(data, pa.RecordBatchReader) else data
    assert data.column("id").to_pylist() == [4, 1]
    assert ROW_NUMBER_COLUMN not in data.column_names


def test_to_file_and_the_plan(table, conn, tmp_path):
    rows = conn.read(annotation_id=table.annotation_id, query="id<10").to_file(
        tmp_path / "t.parquet")
    assert rows == 10 and list(pd.read_parquet(tmp_path / "t.parquet")["id"]) == list(range(10))
    plan = conn.read(file_id=table.file_id).plan
    assert plan.total_rows == 300 and sum(p.rows for p in plan.partitions) == 300


def test_table_calls_on_the_connection(table, conn):
    assert conn.table_size(file_id=table.file_id) == (300, 5)
    assert conn.table_columns(annotation_id=table.annotation_id) == list(table.frame.columns)
    assert table.annotation_id in {t["annotation_id"] for t in conn.list_tables("Image", 7001)}
    ann = conn.upload(table.frame.head(3), "from the connection", parent_id=7001,
                      progress=False)
    assert conn.read(annotation_id=ann).to_pandas()["id"].tolist() == [0, 1, 2]


def test_a_bad_selection_is_refused_before_anything_is_sent(alice):
    never = flight_client.Connection("127.0.0.1", 1, "alice", "x")  # nothing listens there
    with pytest.raises(flight_client.InvalidRequest, match="file_id or an annotation_id"):
        never.read(column_names=["id"])
    with pytest.raises(flight_client.InvalidRequest, match="chunk_size"):
        never.read(file_id=1, chunk_size=0)
    with pytest.raises(flight_client.InvalidRequest, match="format"):
        never.read(file_id=1).to_file("x.xlsx", format="xlsx")
    assert not never.connected


def test_omero2pandas_positional_order_still_works(table, alice):
    df = flight_client.read_table(table.file_id, None, ["id"], range(0, 3), None, None,
                                  alice["server"], alice["port"], alice["username"],
                                  alice["password"])
    assert list(df["id"]) == [0, 1, 2]
    assert flight_client.get_table_size(table.file_id, None, None, alice["server"],
                                        alice["port"], "alice", alice["password"]) == (300, 5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'colums'"):
        flight_client.read_table(file_id=1, colums=["id"])
    with pytest.raises(TypeError, match="multiple values for argument 'file_id'"):
        flight_client.read_table(1, file_id=1)


def test_the_read_signature_is_shown_as_omero2pandas_writes_it():
    params = list(inspect.signature(flight_client.read_table).parameters)
    assert params[:12] == ["file_id", "annotation_id", "column_names", "rows", "chunk_size",
                           "omero_connector", "server", "port", "username", "password",
                           "query", "variables"]
    assert list(inspect.signature(flight_client.download_table).parameters)[:2] == [
        "target_path", "file_id"]
    assert "row_numbers" in inspect.signature(flight_client.read_arrow).parameters


def test_a_read_that_failed_before_reading_may_be_asked_again(conn):
    result = conn.read(file_id=987654321)
    for _ in range(2):  # not "already consumed": nothing was read
        with pytest.raises(flight_client.NotFound):
            result.to_pandas()


def test_threads_asking_one_read_at_once_get_one_output(table, conn):
    result = conn.read(file_id=table.file_id, column_names=["id"])
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(result.to_arrow) for _ in range(4)]
    outcomes = [f.exception() or f.result() for f in futures]
    assert sum(isinstance(o, pa.Table) and o.num_rows == 300 for o in outcomes) == 1
    assert sum(isinstance(o, flight_client.InvalidRequest) for o in outcomes) == 3


@pytest.mark.parametrize(("rows", "first", "count"), [
    (None, 0, 300), (range(20, 45), 20, 25), (range(290, 400), 290, 10), (range(400, 500), 400, 0)])
def test_a_range_is_indexed_by_its_row_numbers_made_by_the_client(table, conn, rows, first,
                                                                   count):
    # A range's row numbers are first, first + 1, ...: not sent, the index is a RangeIndex.
    df = conn.read(file_id=table.file_id, rows=rows, column_names=["id"]).to_pandas()
    assert isinstance(df.index, pd.RangeIndex)
    assert (df.index.start, df.index.stop) == (first, first + count)
    assert df["id"].tolist() == table.frame["id"].tolist()[first:first + count]


def test_row_numbers_still_come_from_the_bridge_where_they_are_not_a_range(table, conn):
    listed = conn.read(file_id=table.file_id, rows=[7, 3, 250]).to_pandas()
    assert listed.index.tolist() == [7, 3, 250] and listed["id"].tolist() == [7, 3, 250]
    queried = conn.read(file_id=table.file_id, query="(id > 100) & (id < 104)").to_pandas()
    assert queried.index.tolist() == [101, 102, 103]
    planned = conn.read(file_id=table.file_id, rows=range(5, 9))
    assert planned.schema.names[0] == ROW_NUMBER_COLUMN  # planned first: read as planned
    df = planned.to_pandas()  # the same index whichever way the rows came
    assert isinstance(df.index, pd.RangeIndex) and df.index.tolist() == [5, 6, 7, 8]
    unnumbered = conn.read(file_id=table.file_id, rows=range(5, 9), row_numbers=False)
    assert unnumbered.to_pandas().index.tolist() == [0, 1, 2, 3]


def test_the_bridge_reads_packed_row_lists_and_is_sent_them(conn):
    assert PACKED_ROWS in conn.server_version()["features"]
    ticket = TableTicket(file_id=1, rows=[7, 3])
    assert json.loads(conn.transport.ticket_bytes(ticket))["rows"] == {
        PACKED_ROWS: "0700000000000000" "0300000000000000"}
