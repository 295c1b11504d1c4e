"""Format compatibility both ways with omero-py's own ``omero.hdfstorageV2.HdfStorage``."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("omero.hdfstorageV2", reason="omero-py (with zeroc-ice) is not installed")

import Ice  # noqa: E402
import omero.columns as oc  # noqa: E402
from omero.hdfstorageV2 import HdfStorage  # noqa: E402

from flight_protocol import columns as cols  # noqa: E402
from flight_server.backends.formats.hdf5 import HDF5_LOCK, H5Reader, H5Writer  # noqa: E402

N = 4
MASK_BYTES = [bytes([i] * (i + 1)) for i in range(N)]


def omero_columns() -> list:
    return [
        oc.LongColumnI("count", "a long", [1, -2, 3, 2**40]),
        oc.DoubleColumnI("value", "", [0.5, float("nan"), -1.0, 1e300]),
        oc.StringColumnI("Roi Name", "names", 8, ["a", "ünï", "", "eight888"]),
        oc.BoolColumnI("flag", "", [True, False, True, False]),
        oc.ImageColumnI("image", "", [1, 2, 3, 4]),
        oc.RoiColumnI("roi", "", [5, 6, 7, 8]),
        oc.WellColumnI("well", "", [9, 10, 11, 12]),
        oc.PlateColumnI("plate", "", [1, 1, 1, 1]),
        oc.DatasetColumnI("dataset", "", [2, 2, 2, 2]),
        oc.FileColumnI("file", "", [3, 3, 3, 3]),
        oc.LongArrayColumnI("longs", "", 2, [[1, 2], [3, 4], [5, 6], [7, 8]]),
        oc.FloatArrayColumnI("floats", "", 3, [[0.5, 1.5, 2.5]] * N),
        oc.DoubleArrayColumnI("doubles", "", 1, [[0.25], [0.5], [0.75], [1.0]]),
        oc.MaskColumnI("mask", "", [1, 2, 3, 4], [0, 1, 0, 1], [0, 0, 1, 1],
                       [1.0, 2.0, 3.0, 4.0], [0.0] * N, [2.0] * N, [3.0] * N, MASK_BYTES),
    ]


@pytest.fixture(scope="module")
def current():
    """A real Ice communicator with omero's column factories, as OMERO.tables has."""
    ic = Ice.initialize()
    for factory in oc.ObjectFactories.values():
        factory.register(ic)
    cur = Ice.Current()
    cur.adapter = ic.createObjectAdapter("")
    cur.ctx = {}
    yield cur
    ic.destroy()


def test_omero_written_table_reads_here(tmp_path):
    path = tmp_path / "omero.h5"
    storage = HdfStorage(str(path), HDF5_LOCK)
    try:
        columns = omero_columns()
        storage.initialize(columns, {"note": "from omero"})
        storage.append(columns)
    finally:
        storage.cleanup()
    reader = H5Reader(path)
    try:
        assert reader.num_rows == N
        kinds = [cols.short_name(cols.column_type_of(f)) for f in reader.schema]
        assert kinds == [type(c).__name__[:-1] for c in omero_columns()]
        assert cols.string_size_of(reader.schema.field("Roi Name")) == 8
        got = reader.read_range(reader.schema.names, 0, N).to_pydict()
    finally:
        reader.close()
    assert got["count"] == [1, -2, 3, 2**40]
    assert got["Roi Name"] == ["a", "ünï", "", "eight888"]
    assert got["longs"] == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert got["doubles"] == [[0.25], [0.5], [0.75], [1.0]]
    assert [m["bytes"] for m in got["mask"]] == MASK_BYTES
    assert [m["theZ"] for m in got["mask"]] == [0, 1, 0, 1]
    assert reader.schema.field("count").metadata[b"omero.description"] == b"a long"


def test_table_written_here_reads_in_omero(tmp_path, current):
    data = pa.table({
        "count": [1, -2, 3], "value": [0.5, float("nan"), 2.0], "Roi Name": ["a", "ünï", ""],
        "flag": [True, False, True], "image": [4, 5, 6],
        "longs": pa.FixedSizeListArray.from_arrays(pa.array(np.arange(6)), 2),
        "mask": pa.array([{"imageId": i, "theZ": i, "theT": 0, "x": 1.0, "y": 2.0, "w": 3.0,
                           "h": 4.0, "bytes": MASK_BYTES[i]} for i in range(3)],
                         type=cols.MASK_TYPE),
    })
    schema = cols.with_string_sizes(cols.omero_schema(data.schema), cols.string_widths(data))
    path = tmp_path / "here.h5"
    writer = H5Writer(path, schema)
    for batch in data.to_batches(max_chunksize=2):
        writer.append(cols.conform_batch(batch, schema))
    writer.close()

    storage = HdfStorage(str(path), HDF5_LOCK, read_only=True)
    try:
        assert storage.rows() == 3
        meta = storage.get_meta_map()
        assert meta["__version"].val == "2" and isinstance(meta["__initialized"].val, float)
        result = storage.read(time.time(), list(range(len(schema))), 0, 3, current)
        by_name = {c.name: c for c in result.columns}
        assert [type(c).__name__ for c in result.columns] == [
            "LongColumnI", "DoubleColumnI", "StringColumnI", "BoolColumnI", "ImageColumnI",
            "LongArrayColumnI", "MaskColumnI"]
        assert by_name["count"].values == [1, -2, 3]
        assert by_name["Roi Name"].values == ["a", "ünï", ""]
        assert [list(v) for v in by_name["longs"].values] == [[0, 1], [2, 3], [4, 5]]
        assert by_name["image"].values == [4, 5, 6]
        assert by_name["mask"].imageId == [0, 1, 2]
        assert [bytes(b) for b in by_name["mask"].bytes] == MASK_BYTES[:3]
        rows = storage.getWhereList(time.time(), "(count > 0)", {}, None, 0, 3, 1)
        assert rows == [0, 2]
    finally:
        storage.cleanup()

