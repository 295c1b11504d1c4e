"""Tables through the client, identical on both backends: types, reads, queries, links."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import flight_client
from flight_protocol import columns as cols
from flight_protocol.messages import META_COLUMN_TYPE

ROWS = 1200


def measurements(rows: int = ROWS) -> pd.DataFrame:
    ids = np.arange(rows, dtype="int64")
    return pd.DataFrame({
        "id": ids,
        "image": ids % 5 + 1,
        "area": ids * 1.5,
        "label": [f"cell-{i % 9}" if i % 7 else f"nœud {i % 3}" for i in ids],
        "ok": ids % 2 == 0,
    })


def every_type(rows: int = 40) -> pa.Table:
    """One column of every OMERO.tables type."""
    rng = np.random.default_rng(7)
    ids = pa.array(np.arange(rows, dtype=np.int64))
    masks = pa.StructArray.from_arrays(
        [pa.array(np.arange(rows), pa.int64()), pa.array(np.zeros(rows, np.int32)),
         pa.array(np.ones(rows, np.int32)), pa.array(rng.uniform(0, 9, rows)),
         pa.array(rng.uniform(0, 9, rows)), pa.array(np.full(rows, 2.0)),
         pa.array(np.full(rows, 3.0)), pa.array([bytes([i % 256, 1, 0]) for i in range(rows)])],
        fields=list(cols.MASK_TYPE))
    source = pa.field("source", pa.int64(), metadata={META_COLUMN_TYPE: cols.FILE.encode()})
    arrays = {
        "long": ids,
        "double": pa.array(np.where(np.arange(rows) % 5 == 0, np.nan, rng.normal(size=rows))),
        "text": pa.array([f"ünï-{i}" * (i % 4) for i in range(rows)]),
        "flag": pa.array(np.arange(rows) % 3 == 0),
        "image": ids, "roi": ids, "well": ids, "plate": ids, "dataset": ids,
        "source": pa.array(np.arange(rows, dtype=np.int64) + 100),
        "longs": pa.FixedSizeListArray.from_arrays(pa.array(np.arange(rows * 3)), 3),
        "floats": pa.FixedSizeListArray.from_arrays(
            pa.array(rng.normal(size=rows * 2).astype(np.float32)), 2),
        "doubles": pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=rows * 4)), 4),
        "mask": masks,
    }
    fields = [source if name == "source" else pa.field(name, arr.type)
              for name, arr in arrays.items()]
    return pa.Table.from_arrays(list(arrays.values()), schema=pa.schema(fields))


@pytest.fixture(scope="session")
def table(site, owner):
    """A table of the owner's, linked to the Image target: (annotation id, file id, frame)."""
    frame = measurements()
    ann = flight_client.upload_table(frame, "measurements", parent_id=site.targets["Image"],
                                     omero_connector=owner, progress=False)
    entry = next(t for t in flight_client.list_tables("Image", site.targets["Image"],
                                                      omero_connector=owner)
                 if t["annotation_id"] == ann)
    return ann, entry["file_id"], frame


def test_every_column_type_round_trips(site, owner):
    source = every_type()
    ann = flight_client.upload_table(source, "all types", parent_id=site.targets["Image"],
                                     omero_connector=owner, progress=False)
    back = flight_client.read_arrow(annotation_id=ann, omero_connector=owner)
    assert back.column_names == source.column_names
    for name in source.column_names:
        assert back[name].to_pylist() == source[name].to_pylist() or name == "double", name
    np.testing.assert_array_equal(back["double"].to_numpy(), source["double"].to_numpy())
    types = {c["name"]: c["type"]
             for c in owner.column_details(annotation_id=ann)}
    assert types == {
        "long": "LongColumn", "double": "DoubleColumn", "text": "StringColumn",
        "flag": "BoolColumn", "image": "ImageColumn", "roi": "RoiColumn", "well": "WellColumn",
        "plate": "PlateColumn", "dataset": "DatasetColumn", "source": "FileColumn",
        "longs": "LongArrayColumn", "floats": "FloatArrayColumn",
        "doubles": "DoubleArrayColumn", "mask": "MaskColumn"}
    assert site.open_tables() == []


def test_read_whole_by_either_id(owner, table):
    ann, file_id, frame = table
    for ids in ({"annotation_id": ann}, {"file_id": file_id}):
        back = flight_client.read_table(**ids, omero_connector=owner)
        pd.testing.assert_frame_equal(back, frame, check_dtype=False)


def test_columns_rows_and_sizes(owner, table):
    ann, _, frame = table
    rows = [1199, 3, 3, 0, 640]
    back = flight_client.read_table(annotation_id=ann, column_names=["label", "id"], rows=rows,
                                    omero_connector=owner)
    expected = frame.loc[rows, ["id", "label"]]  # table order, as omero2pandas
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)
    assert flight_client.get_table_size(annotation_id=ann, omero_connector=owner) == (ROWS, 5)
    assert flight_client.get_table_columns(annotation_id=ann, omero_connector=owner) == list(
        frame.columns)


def test_small_chunks_give_the_same_result(owner, table):
    ann, _, frame = table
    back = flight_client.read_table(annotation_id=ann, chunk_size=97, omero_connector=owner)
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)


@pytest.mark.parametrize(("query", "variables", "select"), [
    ("(area > lo) & ok", {"lo": 900.0}, lambda f: (f.area > 900.0) & f.ok),
    ("(image == n) | (id < 3)", {"n": 2}, lambda f: (f.image == 2) | (f.id < 3)),
    ("label == 'cell-4'", None, lambda f: f.label == "cell-4"),
    ("label == 'nœud 1'", None, lambda f: f.label == "nœud 1"),
    ("(col > 1790.5) & ~flag", {"col": "area", "flag": "ok"}, lambda f: (f.area > 1790.5) & ~f.ok),
    ("sqrt(area) < 3", None, lambda f: np.sqrt(f.area) < 3),
])
def test_queries_with_variables(owner, table, query, variables, select):
    ann, _, frame = table
    back = flight_client.read_table(annotation_id=ann, query=query, variables=variables,
                                    omero_connector=owner)
    expected = frame[select(frame)]
    assert len(expected) > 0
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)


def test_unsafe_query_is_refused(owner, table):
    with pytest.raises(flight_client.InvalidRequest, match="not allowed|unknown name"):
        flight_client.read_table(annotation_id=table[0], query="__import__('os').getpid()",
                                 omero_connector=owner)


def test_other_outputs(owner, table, tmp_path):
    ann, _, frame = table
    arrow = flight_client.read_arrow(annotation_id=ann, omero_connector=owner)
    assert arrow.num_rows == ROWS and arrow.column_names == list(frame.columns)
    polars = flight_client.read_polars(annotation_id=ann, column_names=["id"],
                                       omero_connector=owner)
    assert polars["id"].to_list() == frame.id.tolist()
    import duckdb

    relation = flight_client.read_duckdb(annotation_id=ann, omero_connector=owner,
                                         connection=duckdb.connect())
    assert relation.aggregate("sum(id)").fetchall()[0][0] == int(frame.id.sum())
    target = tmp_path / "t.parquet"
    assert flight_client.download_table(target, annotation_id=ann, omero_connector=owner) == ROWS
    pd.testing.assert_frame_equal(pq.read_table(target).to_pandas(), frame, check_dtype=False)
    csv = tmp_path / "t.csv"
    flight_client.download_table(csv, annotation_id=ann, omero_connector=owner)
    written = pd.read_csv(csv, index_col=0).reset_index(drop=True)  # the index, as omero2pandas
    pd.testing.assert_frame_equal(written, frame, check_dtype=False)


def test_links_to_every_object_type(site, owner):
    frame = measurements(10)
    links = list(site.targets.items())
    ann = flight_client.upload_table(frame, "linked everywhere", parent_id=site.targets["Image"],
                                     links=links, omero_connector=owner, progress=False)
    for kind, object_id in links:
        listed = flight_client.list_tables(kind, object_id, omero_connector=owner)
        entry = next(t for t in listed if t["annotation_id"] == ann)
        assert sorted(tuple(link) for link in entry["links"]) == sorted(links)
        assert entry["name"] == "linked everywhere" and entry["owner"] == site.users["owner"][0]
    everything = flight_client.list_tables(omero_connector=owner)
    assert ann in [t["annotation_id"] for t in everything]


def test_refused_upload_leaves_nothing(site, owner):
    before = {t["annotation_id"] for t in flight_client.list_tables(omero_connector=owner)}
    bad = pd.DataFrame({"when": pd.to_datetime(["2024-01-01"])})
    with pytest.raises(flight_client.InvalidRequest, match="when"):
        flight_client.upload_table(bad, "bad", parent_id=site.targets["Image"],
                                   omero_connector=owner, progress=False)
    nulls = pa.table({"n": pa.array([1, None, 3], pa.int64())})
    with pytest.raises(flight_client.InvalidRequest, match="null"):
        flight_client.upload_table(nulls, "nulls", parent_id=site.targets["Image"],
                                   omero_connector=owner, progress=False)
    after = {t["annotation_id"] for t in flight_client.list_tables(omero_connector=owner)}
    assert after == before
    assert site.open_tables() == []


def test_unknown_column_and_row_are_named(owner, table):
    with pytest.raises(flight_client.InvalidRequest, match="'nope'"):
        flight_client.read_table(annotation_id=table[0], column_names=["nope"],
                                 omero_connector=owner)
    with pytest.raises(flight_client.InvalidRequest, match="row 5000"):
        flight_client.read_table(annotation_id=table[0], rows=[1, 5000], omero_connector=owner)


def test_reads_close_their_tables(site, owner, table):
    flight_client.read_table(annotation_id=table[0], rows=[1, 2], omero_connector=owner)
    assert site.open_tables() == []
