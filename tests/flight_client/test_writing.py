"""Uploads: type handling, string widths, CSV files read in chunks, Parquet, links."""

from __future__ import annotations

import csv
import math
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flight_client
from flight_client import writing
from flight_client.selection import upload_links
from flight_client.writing import csv_source, dataframe_source, optimal_chunk_size
from flight_protocol.messages import META_STRING_SIZE


def upload(source, conn, **kwargs) -> int:
    return flight_client.upload_table(source, "t", parent_id=7001, omero_connector=conn,
                                      progress=False, **kwargs)


def roundtrip(source, conn, **kwargs) -> pd.DataFrame:
    return flight_client.read_table(annotation_id=upload(source, conn, **kwargs),
                                    omero_connector=conn)


def test_types_roundtrip(conn):
    df = pd.DataFrame({
        "image": [1, 2, 3],
        "count": pd.Series([1, 2, 3], dtype="int32"),
        "area": [0.5, float("nan"), 2.0],
        "ok": [True, False, True],
        "label": ["a", None, "ünïcødé"],
        "kind": pd.Categorical(["x", "y", "x"]),
    })
    ann = upload(df, conn)
    back = flight_client.read_table(annotation_id=ann, omero_connector=conn)
    assert list(back["image"]) == [1, 2, 3]
    assert list(back["count"]) == [1, 2, 3]
    assert back["area"].isna().tolist() == [False, True, False]
    assert list(back["ok"]) == [True, False, True]
    assert list(back["label"]) == ["a", "", "ünïcødé"]  # missing strings become ""
    assert list(back["kind"]) == ["x", "y", "x"]
    types = {c["name"]: c["type"]
             for c in conn.column_details(annotation_id=ann)}
    assert types["image"].endswith("ImageColumn") and types["label"].endswith("StringColumn")


def test_string_width_is_declared_in_bytes():
    source = dataframe_source(pd.DataFrame({"s": ["ab", "nœud"], "n": [1, 2]}))
    assert source.schema.field("s").metadata[META_STRING_SIZE] == b"5"
    assert source.schema.field("n").metadata is None


def test_default_chunk_size():
    assert optimal_chunk_size(10) == 50_000
    assert optimal_chunk_size(100) == 20_000
    source = dataframe_source(pd.DataFrame({"a": range(120_000)}))
    assert [b.num_rows for b in source.batches] == [50_000, 50_000, 20_000]


def test_upload_pyarrow_table_and_parquet_file(conn, tmp_path):
    table = pa.table({"id": [1, 2], "name": ["p", "q"]})
    assert list(roundtrip(table, conn)["name"]) == ["p", "q"]
    path = tmp_path / "data.parquet"
    pq.write_table(table, path)
    assert list(roundtrip(path, conn)["id"]) == [1, 2]


def test_csv_is_read_in_chunks(conn, tmp_path, monkeypatch):
    path = tmp_path / "big.csv"
    pd.DataFrame({"id": range(250), "name": [f"n{i}" for i in range(250)]}).to_csv(
        path, index=False)
    blocks = []
    real = writing._csv_text_batches

    def spy(*args):
        for batch in real(*args):
            blocks.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(writing, "CSV_BLOCK_BYTES", 512)
    monkeypatch.setattr(writing, "_csv_text_batches", spy)
    source = csv_source(path, chunk_size=100)
    assert [b.num_rows for b in source.batches] == [100, 100, 50]
    assert source.total_rows == 250
    # both passes read the file in blocks, never whole
    assert sum(blocks) == 500 and max(blocks) < 250

    back = roundtrip(path, conn, chunk_size=100)
    assert len(back) == 250 and list(back["name"][:2]) == ["n0", "n1"]


def test_csv_column_types_come_from_the_whole_file(tmp_path):
    """A column that looks like integers in the first chunk but not later is widened."""
    path = tmp_path / "mixed.csv"
    path.write_text("a,b,c,d\n" + "1,1,x,\n" * 5 + "2.5,,y,\n" + "3,word,z,\n")
    source = csv_source(path, chunk_size=2)
    types = {f.name: f.type for f in source.schema}
    assert types == {"a": pa.float64(), "b": pa.string(), "c": pa.string(), "d": pa.float64()}
    rows = pa.Table.from_batches(list(source.batches))
    assert rows.column("b").to_pylist()[-2:] == [None, "word"]
    assert source.schema.field("b").metadata[META_STRING_SIZE] == b"4"


def test_links_follow_omero2pandas():
    assert upload_links(("Image", 1), None, "Image") == (("Image", 1),)
    assert upload_links([("dataset", 2)], 1, "Image") == (("Dataset", 2), ("Image", 1))
    assert upload_links([["Roi", 3], ("Roi", 3)], 3, "Roi") == (("Roi", 3),)
    with pytest.raises(ValueError, match="no OMERO objects"):
        upload_links(None, None, "Image")
    with pytest.raises(ValueError, match="cannot link"):
        upload_links([("Experimenter", 1)], None, "Image")


def test_bad_sources(conn, tmp_path):
    with pytest.raises(ValueError, match="could not find"):
        flight_client.upload_table(tmp_path / "missing.csv", "t", 1, omero_connector=conn)
    with pytest.raises(ValueError, match="source must be"):
        flight_client.upload_table([1, 2, 3], "t", 1, omero_connector=conn)
    with pytest.raises(ValueError, match="table name"):
        flight_client.upload_table(pd.DataFrame({"a": [1]}), " ", 1, omero_connector=conn)


# -- CSV typing: one rule per cell, whatever the chunks ---------------------------------------
_WORDS = {"na", "nan", "null", "inf", "infinity", "true", "false", "none", "n"}
_CELLS = {
    "int": st.integers(-10**12, 10**12).map(str),
    "float": st.floats(allow_nan=False, allow_infinity=False).map(repr),
    "bool": st.sampled_from(["True", "false", "TRUE", "False"]),
    "string": st.from_regex(r"\A[a-z]{1,8}\Z").filter(lambda s: s not in _WORDS),
    "missing": st.just(""),
}


@st.composite
def sparse_csv(draw) -> tuple[list[list[str]], list[set[str]]]:
    """Columns of text cells (empty in their first rows, mixed kinds), and each one's kinds."""
    rows = draw(st.integers(1, 40))
    columns, kinds = [], []
    for _ in range(draw(st.integers(1, 4))):
        allowed = draw(st.lists(st.sampled_from(sorted(_CELLS)), min_size=1, max_size=3,
                                unique=True))
        lead = draw(st.integers(0, rows))
        cells, seen = [""] * lead, {"missing"} if lead else set()
        for _ in range(rows - lead):
            kind = draw(st.sampled_from(allowed))
            cells.append(draw(_CELLS[kind]))
            seen.add(kind)
        columns.append(cells)
        kinds.append(seen)
    return columns, kinds


def _expected(cells: list[str], kinds: set[str]) -> tuple[pa.DataType, list]:
    """The documented rule, stated independently of the implementation."""
    present = kinds - {"missing"}
    if "string" in present or ("bool" in present and kinds != {"bool"}):
        return pa.string(), [c or None for c in cells]
    if kinds == {"bool"}:
        return pa.bool_(), [c.lower() == "true" for c in cells]
    if kinds == {"int"}:
        return pa.int64(), [int(c) for c in cells]
    return pa.float64(), [float(c) if c else math.nan for c in cells]


@settings(max_examples=60, deadline=None)
@given(sparse_csv(), st.integers(1, 50), st.integers(64, 2048))
def test_csv_types_do_not_depend_on_chunks(data, chunk_size, block_bytes):
    columns, kinds = data
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sparse.csv"
        with path.open("w", newline="") as fh:
            out = csv.writer(fh, lineterminator="\n")
            out.writerow([f"c{i}" for i in range(len(columns))])
            out.writerows(zip(*columns, strict=True))
        with mock.patch.object(writing, "CSV_BLOCK_BYTES", block_bytes):
            source = csv_source(path, chunk_size)
            table = pa.Table.from_batches(list(source.batches), schema=source.schema)
    assert all(b <= chunk_size for b in (len(c) for c in table.to_batches()))
    for i, (cells, seen) in enumerate(zip(columns, kinds, strict=True)):
        kind, values = _expected(cells, seen)
        assert table.schema.field(i).type == kind, (cells, seen)
        got = table.column(i).to_pylist()
        if kind == pa.float64():
            assert np.allclose(got, values, equal_nan=True, rtol=0, atol=0), (cells, got)
        else:
            assert got == values
