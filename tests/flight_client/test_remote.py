"""TileDB tables from the client and their registration with an HTTPS OMERO Plus stand-in."""

from __future__ import annotations

import json
from pathlib import PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import flight_client
from flight_client import errors, remote
from flight_client.connection import Connection
from tests.flight_client.conftest import IMAGE
from tests.omero_plus.fixtures import SERVER_ROOT, omero_plus  # noqa: F401 - a fixture

tiledb = pytest.importorskip("tiledb")
from flight_protocol import columns as cols  # noqa: E402
from flight_server.backends.formats.tiledb import TileDBReader, secret_token  # noqa: E402

KEY = "alice-session-key"


def every_type(n: int = 20) -> pa.Table:
    """Every column type a TileDB table holds (all but MaskColumn)."""
    rng = np.random.default_rng(3)
    df = pd.DataFrame({
        "count": rng.integers(-10**12, 10**12, n),
        "value": rng.normal(size=n),
        "label": [f"ünïcode ✓ {i}" * (i % 3) for i in range(n)],
        "flag": rng.integers(0, 2, n).astype(bool),
        "image": np.arange(n) + 100, "roi": np.arange(n) + 200, "well": np.arange(n) + 300,
        "plate": np.arange(n) + 400, "dataset": np.arange(n) + 500,
    })
    t = pa.Table.from_pandas(df, preserve_index=False)
    file_field = pa.field("file", pa.int64(), metadata={b"omero.column_type": b"FileColumn"})
    t = t.append_column(file_field, pa.array(np.arange(n) + 600))
    t = t.append_column("longs", pa.FixedSizeListArray.from_arrays(
        pa.array(np.arange(3 * n, dtype=np.int64)), 3))
    t = t.append_column("floats", pa.FixedSizeListArray.from_arrays(
        pa.array(np.linspace(0, 1, 2 * n, dtype=np.float32)), 2))
    return t.append_column("doubles", pa.FixedSizeListArray.from_arrays(
        pa.array(np.linspace(0, 1, 4 * n)), 4))


TYPES = ["LongColumn", "DoubleColumn", "StringColumn", "BoolColumn", "ImageColumn", "RoiColumn",
         "WellColumn", "PlateColumn", "DatasetColumn", "FileColumn", "LongArrayColumn",
         "FloatArrayColumn", "DoubleArrayColumn"]


def read_back(path) -> pa.Table:
    with TileDBReader(path) as table:
        assert [cols.short_name(cols.column_type_of(f)) for f in table.schema]
        return pa.Table.from_batches([table.read_range(table.schema.names, 0, table.num_rows)])


# -- create_tiledb -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["table", "reader", "dataframe"])
def test_every_type_round_trips(tmp_path, kind):
    data = every_type()
    source = {"table": data, "reader": pa.RecordBatchReader.from_batches(
        data.schema, data.to_batches(max_chunksize=6)),
        "dataframe": data.select(data.column_names[:9]).to_pandas()}[kind]
    path = tmp_path / "t.tiledb"
    token = flight_client.create_tiledb(source, path, chunk_size=8, progress=False)
    got = read_back(path)
    expected = data if kind != "dataframe" else data.select(data.column_names[:9])
    assert got.to_pydict() == expected.to_pydict()
    with TileDBReader(path) as table:
        assert [cols.short_name(cols.column_type_of(f)) for f in table.schema] == TYPES[
            :len(expected.column_names)]
    with tiledb.open(str(path)) as array:  # the layout OMERO Plus reads
        assert array.schema.sparse and array.schema.domain.dim(0).name == "__tiledb_rows"
        assert array.meta["__version"] == "3" and isinstance(array.meta["__initialized"], float)
        assert array.meta["SecretToken"] == token and len(token) >= 32
    assert len(tiledb.array_fragments(str(path))) == -(-20 // 8)  # one write per chunk


def test_nulls_and_empty_tables(tmp_path):
    df = pd.DataFrame({"s": ["a", None, "ß"], "d": [1.0, None, 3.0]})
    flight_client.create_tiledb(df, tmp_path / "n.tiledb", progress=False)
    got = read_back(tmp_path / "n.tiledb").to_pydict()
    assert got["s"] == ["a", "", "ß"] and np.isnan(got["d"][1])
    flight_client.create_tiledb(pd.DataFrame({"a": pd.Series([], dtype="int64")}),
                               tmp_path / "e.tiledb", progress=False)
    assert read_back(tmp_path / "e.tiledb").num_rows == 0


def test_mask_columns_and_existing_paths_refused(tmp_path):
    masks = pa.table({"mask": pa.array([{"imageId": 1, "theZ": 0, "theT": 0, "x": 0.0, "y": 0.0,
                                         "w": 1.0, "h": 1.0, "bytes": b"\x01"}],
                                       type=cols.MASK_TYPE)})
    with pytest.raises(errors.InvalidRequest, match="MaskColumn.*HDF5"):
        flight_client.create_tiledb(masks, tmp_path / "m.tiledb", progress=False)
    assert not (tmp_path / "m.tiledb").exists()
    (tmp_path / "x.tiledb").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        flight_client.create_tiledb(pd.DataFrame({"a": [1]}), tmp_path / "x.tiledb")
    with pytest.raises(errors.InvalidRequest, match="no OMERO.tables column|cannot store"):
        flight_client.create_tiledb(pa.table({"t": pa.array([1], pa.timestamp("s"))}),
                                   tmp_path / "ts.tiledb", progress=False)


def test_csv_larger_than_a_chunk_is_written_chunk_by_chunk(tmp_path):
    n, chunk = 2500, 1000
    df = pd.DataFrame({"id": np.arange(n), "x": np.arange(n) * 0.25,
                       "name": [f"cell {i}" for i in range(n)], "ok": np.arange(n) % 3 == 0})
    csv = tmp_path / "big.csv"
    df.to_csv(csv, index=False)
    path = tmp_path / "big.tiledb"
    flight_client.create_tiledb(csv, path, chunk_size=chunk, progress=False)
    fragments = tiledb.array_fragments(str(path))
    assert len(fragments) == 3  # never the whole file at once: one write per chunk
    assert sorted(f.nonempty_domain[0][1] - f.nonempty_domain[0][0] + 1 for f in fragments) == [
        500, 1000, 1000]
    assert read_back(path).to_pandas().equals(df)


def test_flight_stream_and_download(tmp_path, conn, table):
    stream = flight_client.read_arrow(file_id=table.file_id, omero_connector=conn, stream=True,
                                      chunk_size=70)
    path = tmp_path / "from-flight.tiledb"
    flight_client.create_tiledb(stream, path, chunk_size=100, progress=False)
    got = read_back(path).to_pandas()
    pd.testing.assert_frame_equal(got, table.frame, check_dtype=False)

    target = tmp_path / "download.tiledb"  # the suffix picks the format
    rows = flight_client.download_table(target, file_id=table.file_id, query="(id > 10) & ok",
                                        omero_connector=conn, chunk_size=40, progress=False)
    expected = table.frame[(table.frame.id > 10) & table.frame.ok].reset_index(drop=True)
    assert rows == len(expected)
    pd.testing.assert_frame_equal(read_back(target).to_pandas(), expected, check_dtype=False)
    with TileDBReader(target) as array:
        assert cols.short_name(cols.column_type_of(array.schema.field("image"))) == "ImageColumn"
    assert secret_token(target)
    assert len(tiledb.array_fragments(str(target))) > 1  # streamed, one write per batch
    whole = tmp_path / "whole"
    assert flight_client.download_table(whole, file_id=table.file_id, format="tiledb",
                                        omero_connector=conn, progress=False) == len(table.frame)
    with pytest.raises(FileExistsError):
        flight_client.download_table(whole, file_id=table.file_id, format="tiledb",
                                     omero_connector=conn)


# -- paths ---------------------------------------------------------------------------------------
def test_remote_location_maps_paths(tmp_path):
    local, server = remote.remote_location("J:\\data\\tables\\my_omero_table.tiledb",
                                           "/network_data/tables", "T")
    assert isinstance(local, PureWindowsPath)
    assert server == PurePosixPath("/network_data/tables/my_omero_table.tiledb")
    _, server = remote.remote_location("J:\\data\\t.tiledb", "/srv/x.tiledb", "T")
    assert server == PurePosixPath("/srv/x.tiledb")
    local, server = remote.remote_location(tmp_path, None, "My table")
    assert local == tmp_path / "My table.tiledb" and server == PurePosixPath(
        (tmp_path / "My table.tiledb").as_posix())
    with pytest.raises(errors.InvalidRequest, match="give remote_path"):
        remote.remote_location("J:\\data\\t.tiledb", None, "T")
    with pytest.raises(errors.InvalidRequest, match="absolute POSIX path"):
        remote.remote_location(tmp_path, "J:\\data", "T")


# -- registration --------------------------------------------------------------------------------
def make_array(plus, name: str) -> tuple[str, str]:
    """A TileDB array on the shared storage: (its path on the server, its token)."""
    local = plus.path_map[SERVER_ROOT] / name
    token = flight_client.create_tiledb(pd.DataFrame({"a": [1, 2, 3]}), local, progress=False)
    return f"{SERVER_ROOT}/{name}", token


def register(plus, path, token, **kwargs):
    options = {"web_url": plus.url, "session_key": KEY, "ca_file": plus.ca_file,
               "prefix": "omero"} | kwargs
    return flight_client.register_table(None, path, "My table", [("Image", 5), ("Roi", 2)],
                                        token, **options)


def test_registration_speaks_the_protocol(omero_plus):  # noqa: F811
    path, token = make_array(omero_plus, "ok.tiledb")
    annotation_id = register(omero_plus, path, token)
    done = omero_plus.registrations[-1]
    assert (done.annotation_id, done.uri, done.name, done.user) == (
        annotation_id, path, "My table", "alice")
    assert sorted(done.targets) == ["Image:5", "Roi:2"]
    sent = omero_plus.requests[-1]
    assert sent["query"] == {"bsession": [KEY]}
    assert sent["headers"]["x-secrettoken"] == token
    assert sent["headers"]["referer"] == omero_plus.url
    assert "csrftoken=" in sent["headers"]["cookie"]
    assert sent["headers"]["x-csrftoken"] in sent["headers"]["cookie"]
    assert json.loads(sent["body"])["uri"] == path


def test_wrong_or_missing_token_refused(omero_plus):  # noqa: F811
    path, token = make_array(omero_plus, "tok.tiledb")
    before = len(omero_plus.registrations)
    with pytest.raises(errors.PermissionDenied, match="HTTP 403.*SecretToken does not match"):
        register(omero_plus, path, token[::-1])
    with pytest.raises(errors.InvalidRequest, match="HTTP 400.*Missing X-SecretToken"):
        register(omero_plus, path, None)
    assert len(omero_plus.registrations) == before


def test_registration_errors_are_clear(omero_plus, monkeypatch):  # noqa: F811
    path, token = make_array(omero_plus, "err.tiledb")
    with pytest.raises(errors.AuthenticationFailed, match="session key was not accepted"):
        register(omero_plus, path, token, session_key="expired")
    with pytest.raises(errors.NotFound, match="HTTP 404.*prefix"):
        register(omero_plus, path, token, prefix="")
    with pytest.raises(errors.NotFound, match="No TileDB array found at /network_data/nope"):
        register(omero_plus, f"{SERVER_ROOT}/nope.tiledb", token)
    with pytest.raises(errors.ConnectionFailed, match="ca_file"):
        register(omero_plus, path, token, ca_file=None)
    with pytest.raises(errors.InvalidRequest, match="https://"):
        register(omero_plus, path, token, web_url=omero_plus.url.replace("https", "http"))
    monkeypatch.delenv(remote.ENV_WEB_URL, raising=False)
    with pytest.raises(errors.MissingConnectionDetails, match="OMERO_FLIGHT_WEB_URL"):
        register(omero_plus, path, token, web_url=None)
    with pytest.raises(errors.MissingConnectionDetails, match="session key"):
        register(omero_plus, path, token, session_key=None)
    with pytest.raises(errors.InvalidRequest, match="absolute POSIX path"):
        register(omero_plus, "J:\\data\\err.tiledb", token)


def test_session_key_from_a_session_connection(omero_plus, bridge, monkeypatch):  # noqa: F811
    path, token = make_array(omero_plus, "conn.tiledb")
    monkeypatch.setenv(remote.ENV_WEB_URL, omero_plus.url + "/")
    session = Connection(bridge.url, username="__session__", password=KEY, allow_token=False)
    annotation_id = flight_client.register_table(session, path, "via session", [("Image", IMAGE)],
                                                 token, "/omero/", ca_file=omero_plus.ca_file)
    assert omero_plus.registrations[-1].annotation_id == annotation_id


def test_create_remote_table_writes_then_registers(omero_plus, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv(remote.ENV_WEB_URL, omero_plus.url)
    shared = omero_plus.path_map[SERVER_ROOT]
    csv = tmp_path / "cells.csv"
    pd.DataFrame({"image": [1, 2, 3], "area": [0.5, 1.5, 2.5]}).to_csv(csv, index=False)
    annotation_id = remote.create_remote_table(
        csv, "cells", shared / "lab", f"{SERVER_ROOT}/lab", links=[("Image", 3)],
        session_key=KEY, prefix="omero", ca_file=omero_plus.ca_file,
        progress=False)
    done = omero_plus.registrations[-1]
    assert (done.annotation_id, done.uri, done.targets) == (
        annotation_id, f"{SERVER_ROOT}/lab/cells.tiledb", ["Image:3"])
    assert read_back(shared / "lab" / "cells.tiledb").to_pydict() == {
        "image": [1, 2, 3], "area": [0.5, 1.5, 2.5]}
    # Nothing is written when the server side is not configured.
    monkeypatch.delenv(remote.ENV_WEB_URL)
    with pytest.raises(errors.MissingConnectionDetails):
        remote.create_remote_table(csv, "again", shared / "lab2", session_key=KEY)
    assert not (shared / "lab2").exists()


def test_upload_table_with_local_and_remote_paths(omero_plus, bridge, tmp_path,  # noqa: F811
                                                   monkeypatch):
    """omero2pandas' call: write at local_path, register at remote_path, return the id."""
    monkeypatch.setenv(remote.ENV_WEB_URL, omero_plus.url)
    monkeypatch.setenv("SSL_CERT_FILE", str(omero_plus.ca_file))
    shared = omero_plus.path_map[SERVER_ROOT]
    df = pd.DataFrame({"roi": [4, 5], "label": ["a", "é"]})
    annotation_id = flight_client.upload_table(
        df, "My Custom Table", links=[("Image", 101)], server=bridge.url,
        username="__session__", password=KEY, local_path=shared / "tables" / "mine.tiledb",
        remote_path=f"{SERVER_ROOT}/tables/", prefix="/omero")
    done = omero_plus.registrations[-1]
    assert (done.annotation_id, done.uri, done.name, done.targets) == (
        annotation_id, f"{SERVER_ROOT}/tables/mine.tiledb", "My Custom Table", ["Image:101"])
    assert read_back(shared / "tables" / "mine.tiledb").to_pandas().equals(df)
    with pytest.raises(errors.InvalidRequest, match="remote_path needs local_path"):
        flight_client.upload_table(df, "t", parent_id=1, remote_path="/srv/t.tiledb",
                                   username="__session__", password=KEY)


# -- the bridge registers on the caller's behalf ------------------------------------------
# (with the OMERO backend: tests/flight_server/backends/omero/test_registration.py)
def test_embedded_store_bridge_cannot_register(conn):
    with pytest.raises(errors.InvalidRequest, match="embedded store.*session_key="):
        flight_client.register_table(conn, f"{SERVER_ROOT}/x.tiledb", "t", [("Image", 1)], "tok")
