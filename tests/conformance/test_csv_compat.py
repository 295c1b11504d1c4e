"""download_table's CSV is byte for byte the file omero2pandas 0.4.2 writes.

The same OMERO.table, made by the unmodified omero2pandas on the OMERO
stand-in (real omero-py over real Ice), is downloaded by omero2pandas itself
and by flight_client through a bridge running the OMERO backend; the two
files must be identical, whatever chunk sizes either side uses.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

import flight_client
from tests.standin.fixtures import SKIP_REASON, omero_world  # noqa: F401 - session fixture

pytest.importorskip("omero", reason=SKIP_REASON)
omero2pandas = pytest.importorskip("omero2pandas", reason="omero2pandas is not installed")

pytestmark = pytest.mark.omero


def _frame() -> pd.DataFrame:
    n = 23
    rng = np.random.default_rng(15)
    area = rng.uniform(0, 100, n)
    area[[0, 4, 9]] = [1.0, np.nan, 250.0]  # whole numbers keep their ".0"; NaN is empty
    labels = [f"cell {i}" for i in range(n)]
    labels[1:6] = ['a, b', 'say "hi"', "comma,\"quote\",end", "", "nœud ✓"]
    return pd.DataFrame({
        "object": np.arange(n, dtype=np.int64) * 1000,
        "image": np.arange(n, dtype=np.int64) % 3 + 1,
        "area": area,
        "ratio": np.linspace(-1e-7, 1e12, n),
        "valid": np.arange(n) % 3 == 0,
        "label": labels,
    })


@pytest.fixture(scope="module")
def bridge(omero_standin, omero_world) -> Iterator[Any]:  # noqa: F811
    from flight_server.backends.omero import OmeroBackend
    from flight_server.service import FlightService

    backend = OmeroBackend(omero_standin.host, omero_standin.port)
    server = FlightService(backend, "grpc://127.0.0.1:0")
    yield server
    server.shutdown()
    backend.close()


@pytest.fixture(scope="module")
def o2p(omero_standin, omero_world) -> Iterator[Any]:  # noqa: F811
    conn = omero2pandas.connect_to_omero(
        server=omero_standin.host, port=omero_standin.port, username="alice",
        password=omero_standin.passwords["alice"], allow_token=False, interactive=False,
        keep_alive=False)
    yield conn
    conn.shutdown()


@pytest.fixture(scope="module")
def client(bridge, omero_standin) -> Iterator[flight_client.Connection]:
    with flight_client.connect_to_omero(
            server="127.0.0.1", port=bridge.port, username="alice",
            password=omero_standin.passwords["alice"], interactive=False,
            keep_alive=False, allow_token=False) as conn:
        yield conn


@pytest.fixture(scope="module")
def table(o2p, omero_world) -> int:  # noqa: F811
    image = omero_world.images[omero_world.shared_group]
    return omero2pandas.upload_table(_frame(), "csv compat", parent_id=image,
                                     parent_type="Image", omero_connector=o2p)


@pytest.mark.parametrize("o2p_chunk, our_chunk", [(1000, None), (7, 5), (4, 23)])
def test_download_table_csv_is_omero2pandas_csv(table, o2p, client, tmp_path, o2p_chunk,
                                                our_chunk):
    theirs, ours = tmp_path / "omero2pandas.csv", tmp_path / "flight.csv"
    omero2pandas.download_table(str(theirs), annotation_id=table, chunk_size=o2p_chunk,
                                omero_connector=o2p)
    rows = flight_client.download_table(ours, annotation_id=table, chunk_size=our_chunk,
                                        omero_connector=client, progress=False)
    assert rows == len(_frame())
    assert ours.read_bytes() == theirs.read_bytes()
    back = pd.read_csv(ours, index_col=0)
    assert back["area"].dtype == np.float64 and back["valid"].dtype == bool
    assert back["label"].fillna("").tolist() == _frame()["label"].tolist()


def test_selected_rows_and_columns_match_too(table, o2p, client, tmp_path):
    theirs, ours = tmp_path / "omero2pandas.csv", tmp_path / "flight.csv"
    rows, columns = [20, 3, 4, 11], ["label", "area", "valid"]
    omero2pandas.download_table(str(theirs), annotation_id=table, rows=rows,
                                column_names=columns, chunk_size=3, omero_connector=o2p)
    flight_client.download_table(ours, annotation_id=table, rows=rows, column_names=columns,
                                 chunk_size=2, omero_connector=client, progress=False)
    assert ours.read_bytes() == theirs.read_bytes()
    assert pd.read_csv(ours, index_col=0).index.tolist() == rows


def test_slash_in_a_column_name_reads_back_as_omero2pandas_reads_it(o2p, client, omero_world):  # noqa: F811
    """omero2pandas stores ``a/b`` as ``a\\b`` and reads it back so; the bridge does the same."""
    image = omero_world.images[omero_world.shared_group]
    frame = pd.DataFrame({"a/b": [1.5, 2.5]})
    by_o2p = omero2pandas.upload_table(frame, "slash o2p", parent_id=image, parent_type="Image",
                                       omero_connector=o2p)
    by_us = flight_client.upload_table(frame, "slash flight", parent_id=image,
                                       omero_connector=client)
    for ann in (by_o2p, by_us):
        theirs = omero2pandas.read_table(annotation_id=ann, omero_connector=o2p)
        ours = flight_client.read_table(annotation_id=ann, omero_connector=client,
                                        progress=False)
        assert list(theirs.columns) == list(ours.columns) == ["a\\b"]


def test_array_columns_match_too(o2p, client, omero_world, tmp_path):  # noqa: F811
    import pyarrow as pa

    image = omero_world.images[omero_world.shared_group]
    table = pa.table({
        "n": pa.array([1, 2, 3], pa.int64()),
        "longs": pa.FixedSizeListArray.from_arrays(pa.array(range(6), pa.int64()), 2),
        "floats": pa.FixedSizeListArray.from_arrays(
            pa.array([0.1, 1.0, -2.5, float("nan"), 3.0, 1e-9], pa.float32()), 2),
        "doubles": pa.FixedSizeListArray.from_arrays(
            pa.array([0.1, 1.0, -2.5, float("nan"), 3.0, 1e20], pa.float64()), 2),
    })
    ann = flight_client.upload_table(table, "arrays", parent_id=image, omero_connector=client)
    theirs, ours = tmp_path / "omero2pandas.csv", tmp_path / "flight.csv"
    omero2pandas.download_table(str(theirs), annotation_id=ann, chunk_size=2,
                                omero_connector=o2p)
    flight_client.download_table(ours, annotation_id=ann, chunk_size=1, omero_connector=client,
                                 progress=False)
    assert ours.read_bytes() == theirs.read_bytes()
    assert '"[0, 1]"' in ours.read_text()
