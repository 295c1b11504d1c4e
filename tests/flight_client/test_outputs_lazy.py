"""scan_polars asks the bridge for only the columns a query uses, and stops after head(n)."""

from __future__ import annotations

import pyarrow as pa
import pytest

import flight_client
from flight_client import api, outputs

pl = pytest.importorskip("polars")


def test_lazy_frame_projects_and_stops_early():
    table = pa.table({"a": list(range(100)), "b": [float(i) for i in range(100)],
                      "c": [str(i) for i in range(100)]})
    asked: list[list[str] | None] = []
    sent: list[int] = []

    def open_reader(columns):
        asked.append(columns)
        part = table if columns is None else table.select(columns)

        def batches():
            for batch in part.to_batches(max_chunksize=10):
                sent.append(batch.num_rows)
                yield batch

        return pa.RecordBatchReader.from_batches(part.schema, batches())

    lazy = outputs.lazy_polars(lambda: table.schema, open_reader, "test")
    assert lazy.collect_schema().names() == ["a", "b", "c"]
    assert lazy.filter(pl.col("a") > 90).select(pl.col("b").sum()).collect().item() == sum(
        range(91, 100))
    assert sorted(asked[-1]) == ["a", "b"]
    sent.clear()
    assert lazy.select("c").head(15).collect()["c"].to_list() == [str(i) for i in range(15)]
    assert asked[-1] == ["c"] and sum(sent) <= 20  # stopped after the second batch


def test_scan_polars_reads_only_the_used_columns(table, conn, monkeypatch):
    seen: list[tuple[str, ...]] = []
    real = api._reader

    def recording(selection, *args, **kwargs):
        seen.append(tuple(selection["column_names"]))
        return real(selection, *args, **kwargs)

    monkeypatch.setattr(api, "_reader", recording)
    lazy = flight_client.scan_polars(file_id=table.file_id, omero_connector=conn)
    total = lazy.select(pl.col("area").sum()).collect().item()
    assert total == pytest.approx(table.frame["area"].sum())
    assert seen == [("area",)]


def test_scan_polars_refuses_a_missing_table_with_a_typed_error(conn):
    with pytest.raises(flight_client.NotFound, match="987654"):
        flight_client.scan_polars(file_id=987654, omero_connector=conn)
