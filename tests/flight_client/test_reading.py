"""Reads beyond omero2pandas: Arrow, streaming, Polars, DuckDB, Parquet, parallel endpoints."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

import flight_client
from flight_client.reading import ordered_batches
from flight_client.selection import table_ticket
from flight_protocol.messages import ROW_NUMBER_COLUMN, RowRange, TableTicket


def test_read_arrow(table, conn):
    result = flight_client.read_arrow(file_id=table.file_id, omero_connector=conn)
    assert isinstance(result, pa.Table)
    assert result.column_names == list(table.frame.columns)
    assert result.column("label").to_pylist() == list(table.frame["label"])
    with_rows = flight_client.read_arrow(file_id=table.file_id, rows=[5, 2],
                                         row_numbers=True, omero_connector=conn)
    assert with_rows.column(ROW_NUMBER_COLUMN).to_pylist() == [5, 2]


def test_read_arrow_stream_keeps_its_own_connection(table, alice):
    reader = flight_client.read_arrow(file_id=table.file_id, chunk_size=40, stream=True,
                                      **alice)
    assert isinstance(reader, pa.RecordBatchReader)
    sizes = [batch.num_rows for batch in reader]
    assert sum(sizes) == 300 and max(sizes) <= 40


def test_read_polars(table, conn):
    df = flight_client.read_polars(file_id=table.file_id, column_names=["id", "label"],
                                   query="id<3", omero_connector=conn)
    assert df.columns == ["id", "label"]
    assert df["id"].to_list() == [0, 1, 2]


def test_read_duckdb(table, conn):
    import duckdb

    con = duckdb.connect()
    relation = flight_client.read_duckdb(file_id=table.file_id, omero_connector=conn,
                                         connection=con)
    assert relation.aggregate("sum(id)").fetchall()[0][0] == sum(range(300))


def test_non_contiguous_rows_and_columns(table, conn):
    df = flight_client.read_table(file_id=table.file_id, rows=[299, 0, 150],
                                  column_names=["label"], omero_connector=conn)
    assert list(df.index) == [299, 0, 150]
    assert list(df["label"]) == [table.frame["label"][i] for i in (299, 0, 150)]


def test_range_is_sent_compactly():
    ticket = table_ticket(file_id=1, rows=range(10, 20))
    assert ticket.rows == RowRange(10, 20)
    assert table_ticket(file_id=1, rows=range(0, 10, 2)).rows == (0, 2, 4, 6, 8)
    assert table_ticket(file_id=1, rows=iter([3, 1])).rows == (3, 1)
    with pytest.raises(ValueError):
        table_ticket(file_id=1, rows=[-1])


def test_empty_selection(table, conn):
    df = flight_client.read_table(file_id=table.file_id, query="id<0", omero_connector=conn)
    assert len(df) == 0 and list(df.columns) == list(table.frame.columns)


def test_download_parquet(table, conn, tmp_path):
    target = tmp_path / "sub" / "table.parquet"
    rows = flight_client.download_table(target, file_id=table.file_id, chunk_size=64,
                                        omero_connector=conn, progress=False)
    assert rows == 300
    back = pd.read_parquet(target)
    pd.testing.assert_frame_equal(back, table.frame, check_dtype=False, check_index_type=False)
    assert pq.ParquetFile(target).metadata.num_row_groups == 5  # written batch by batch


def test_download_csv_format_argument_and_query(table, conn, tmp_path):
    target = tmp_path / "table.out"
    flight_client.download_table(target, file_id=table.file_id, query="id>=295",
                                 omero_connector=conn, format="csv")
    back = pd.read_csv(target, index_col=0)
    assert list(back.index) == [295, 296, 297, 298, 299]
    with pytest.raises(ValueError, match="format"):
        flight_client.download_table(tmp_path / "x", file_id=table.file_id, format="xlsx",
                                     omero_connector=conn)


def test_list_tables(table, conn, bridge):
    mine = flight_client.list_tables(omero_connector=conn)
    assert table.annotation_id in {t["annotation_id"] for t in mine}
    on_image = flight_client.list_tables("image", 7001, omero_connector=conn)
    entry = next(t for t in on_image if t["annotation_id"] == table.annotation_id)
    assert entry["rows"] == 300 and entry["owner"] == "alice"
    assert flight_client.list_tables("Image", 999, omero_connector=conn) == []
    with pytest.raises(ValueError, match="both"):
        flight_client.list_tables("Image", omero_connector=conn)
    # carol (another, private group) does not see alice's table
    carol = flight_client.list_tables("Image", 7001, server=bridge.url, username="carol",
                                      password=bridge.passwords["carol"])
    assert table.annotation_id not in {t["annotation_id"] for t in carol}


@pytest.fixture(scope="module")
def split_bridge(tmp_path_factory):
    """A second bridge that splits reads into endpoints of 64 rows."""
    from tests.conftest import start_bridge

    b = start_bridge(tmp_path_factory.mktemp("split") / "store", split_rows=64)
    yield b
    b.server.shutdown()


def test_split_read_is_fetched_in_parallel_and_in_order(split_bridge):
    login = {"server": split_bridge.url, "username": "alice",
             "password": split_bridge.passwords["alice"]}
    frame = pd.DataFrame({"id": range(1000), "x": [i * 0.5 for i in range(1000)]})
    ann = flight_client.upload_table(frame, "split", parent_id=1, **login)
    with flight_client.connect_to_omero(**login) as c:
        info = c.transport.flight_info(table_ticket(annotation_id=ann).encode())
        assert len(info.endpoints) > 4  # more endpoints than fetching threads
    df = flight_client.read_table(annotation_id=ann, chunk_size=10, **login)
    pd.testing.assert_frame_equal(df, frame, check_dtype=False, check_index_type=False)
    reader = flight_client.read_arrow(annotation_id=ann, stream=True, **login)
    first = reader.read_next_batch()  # stop early: the workers must wind down
    assert first.column("id")[0].as_py() == 0
    reader.close()


def test_ordered_batches_over_hand_made_endpoints(table, conn):
    """Endpoints of different sizes come back in endpoint order, not completion order."""
    cuts = [(0, 250), (250, 260), (260, 300)]
    endpoints = [
        flight.FlightEndpoint(TableTicket(file_id=table.file_id, rows=RowRange(a, b),
                                          chunk_size=7).encode(), [])
        for a, b in cuts
    ]
    batches = list(ordered_batches(conn.transport, endpoints))
    ids = [i for b in batches for i in b.column("id").to_pylist()]
    assert ids == list(range(300))


def test_progress_bar_when_asked(table, conn, capsys):
    flight_client.read_table(file_id=table.file_id, omero_connector=conn, progress=True)
    assert "Reading table" in capsys.readouterr().err
    flight_client.read_table(file_id=table.file_id, omero_connector=conn)
    assert capsys.readouterr().err == ""  # stderr is not a terminal here


def _typed_table() -> pa.Table:
    file_field = pa.field("file", pa.int64(), metadata={b"omero.column_type": b"FileColumn"})
    plain = pa.table({"image": [3, 4, 5], "x": [0.5, float("nan"), 2.0]})
    return plain.append_column(file_field, pa.array([11, 12, 13]))


def test_parquet_download_keeps_column_types_through_reupload(conn, tmp_path):
    import duckdb
    import polars as pl

    ann = flight_client.upload_table(_typed_table(), "typed", parent_id=7001,
                                     omero_connector=conn)
    types = {c["name"]: c["type"] for c in
             conn.column_details(annotation_id=ann)}
    assert types["file"].endswith("FileColumn") and types["image"].endswith("ImageColumn")
    whole, some = tmp_path / "whole.parquet", tmp_path / "some.parquet"
    flight_client.download_table(whole, annotation_id=ann, omero_connector=conn, progress=False)
    flight_client.download_table(some, annotation_id=ann, rows=[2, 0], omero_connector=conn,
                                 progress=False)
    schema = pq.read_schema(whole)
    assert schema.names == ["image", "x", "file"]  # no __index_level_0__ for Polars or DuckDB
    assert schema.field("file").metadata[b"omero.column_type"].endswith(b"FileColumn")
    assert pl.read_parquet(whole).columns == ["image", "x", "file"]
    assert duckdb.sql(f"SELECT * FROM '{whole}'").columns == ["image", "x", "file"]
    assert list(pd.read_parquet(whole).index) == [0, 1, 2]
    selected = pd.read_parquet(some)
    assert list(selected.index) == [2, 0] and list(selected.columns) == ["image", "x", "file"]
    for path in (whole, some):
        again = flight_client.upload_table(str(path), "typed again", parent_id=7001,
                                           omero_connector=conn)
        back = {c["name"]: c["type"] for c in
                conn.column_details(annotation_id=again)}
        assert back == types


def test_read_duckdb_stream_scans_the_reader_once(table, conn):
    import duckdb

    con = duckdb.connect()
    relation = flight_client.read_duckdb(file_id=table.file_id, chunk_size=32, stream=True,
                                         omero_connector=conn, connection=con)
    assert relation.aggregate("sum(id), count(*)").fetchall() == [(sum(range(300)), 300)]
    with pytest.raises(duckdb.InvalidInputException, match="already been consumed"):
        relation.aggregate("count(*)").fetchall()


def test_scan_polars_is_lazy_and_pushes_columns_down(table, conn, bridge):
    import polars as pl

    lazy = flight_client.scan_polars(file_id=table.file_id, chunk_size=50, omero_connector=conn)
    assert isinstance(lazy, pl.LazyFrame)
    assert lazy.collect_schema().names() == list(table.frame.columns)
    result = (lazy.filter(pl.col("id") % 2 == 0).group_by("image")
              .agg(pl.col("area").sum()).sort("image").collect())
    expected = (table.frame[table.frame.id % 2 == 0].groupby("image")["area"].sum())
    assert result["image"].to_list() == list(expected.index)
    assert result["area"].to_list() == list(expected.values)
    assert lazy.select("label").head(3).collect()["label"].to_list() == list(
        table.frame["label"][:3])
    # the same plan again: a fresh stream; selected rows and row numbers pass through
    picked = flight_client.scan_polars(file_id=table.file_id, rows=iter([7, 3]),
                                       row_numbers=True, omero_connector=conn)
    for _ in range(2):
        assert picked.select(ROW_NUMBER_COLUMN, "id").collect().rows() == [(7, 7), (3, 3)]
