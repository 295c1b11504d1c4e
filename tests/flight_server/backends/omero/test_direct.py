"""Direct reads: a bridge with OMERO's data directory reads tables from disk, as the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("omero", reason="omero-py (with zeroc-ice 3.6) is not installed")

import flight_client  # noqa: E402
from flight_server.config import ConfigError, load_settings  # noqa: E402

pytestmark = pytest.mark.omero

ROWS = 25_000


@pytest.fixture(scope="module")
def direct_bridge(omero_bridge) -> Iterator[Any]:
    """A second bridge over the same stand-in, reading tables from its data directory."""
    from flight_server.backends.omero import OmeroBackend
    from flight_server.service import FlightService

    standin = omero_bridge.standin
    backend = OmeroBackend(standin.host, standin.port, data_dir=standin.data_dir)
    server = FlightService(backend, "grpc://127.0.0.1:0")
    yield server
    server.shutdown()
    backend.close()


@pytest.fixture
def direct_sign_in(direct_bridge, omero_bridge) -> Iterator[Any]:
    connections: list[flight_client.Connection] = []

    def connect(user: str) -> flight_client.Connection:
        conn = flight_client.connect_to_omero(
            server="127.0.0.1", port=direct_bridge.port, username=user,
            password=omero_bridge.password(user), interactive=False, keep_alive=False,
            allow_token=False)
        connections.append(conn)
        return conn

    yield connect
    for conn in connections:
        conn.shutdown()


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return pd.DataFrame({
        "object": np.arange(ROWS, dtype=np.int64),
        "Image": rng.integers(1, 9, ROWS),
        "area": rng.uniform(0, 1, ROWS),
        "label": [f"cell-{i % 97}" if i % 7 else "ünïcødé" for i in range(ROWS)],
        "valid": rng.integers(0, 2, ROWS).astype(bool),
    })


@pytest.fixture
def private_table(omero_bridge, sign_in, frame) -> int:
    """alice's table in her private group (rw----: bob, in the same group, cannot see it)."""
    world = omero_bridge.world
    return flight_client.upload_table(frame, "direct", parent_id=world.images[world.private_group],
                                      omero_connector=sign_in("alice"), progress=False)


def test_direct_reads_equal_the_ice_path(private_table, sign_in, direct_sign_in, frame):
    ice, direct = sign_in("alice"), direct_sign_in("alice")
    reads: list[dict[str, Any]] = [
        {}, {"column_names": ["label", "area"]}, {"rows": [ROWS - 1, 0, 17, 17]},
        {"query": "(area < 0.05) & valid"}, {"query": "label == 'ünïcødé'"},
    ]
    for kwargs in reads:
        expected = flight_client.read_table(annotation_id=private_table, omero_connector=ice,
                                            progress=False, **kwargs)
        got = flight_client.read_table(annotation_id=private_table, omero_connector=direct,
                                       progress=False, **kwargs)
        pd.testing.assert_frame_equal(got, expected)
    pd.testing.assert_frame_equal(
        flight_client.read_table(annotation_id=private_table, omero_connector=direct,
                                 progress=False), frame)


def test_direct_reads_open_no_table_in_omero(private_table, direct_sign_in, omero_bridge):
    conn = direct_sign_in("alice")
    before = omero_bridge.standin.open_tables()  # omero2pandas, in other tests, leaves its open
    reader = flight_client.read_arrow(annotation_id=private_table, omero_connector=conn,
                                      stream=True, chunk_size=1000, progress=False)
    first = next(iter(reader))
    assert first.num_rows > 0
    assert omero_bridge.standin.open_tables() == before  # read from disk, not OMERO.tables
    assert sum(b.num_rows for b in reader) + first.num_rows == ROWS


def test_who_cannot_see_the_file_cannot_read_it_directly(private_table, direct_sign_in):
    alice, bob = direct_sign_in("alice"), direct_sign_in("bob")
    file_id = next(t["file_id"] for t in flight_client.list_tables(omero_connector=alice)
                   if t["annotation_id"] == private_table)
    for ref in ({"annotation_id": private_table}, {"file_id": file_id}):
        with pytest.raises(flight_client.NotFound, match="may not read"):
            flight_client.read_table(omero_connector=bob, **ref)


def test_only_omero_tables_files_are_read_as_tables(omero_bridge, direct_sign_in, frame):
    world = omero_bridge.world
    csv = omero_bridge.standin.seed.csv("alice", world.private_group, frame.head(10), "t.csv")
    with pytest.raises(flight_client.InvalidRequest, match="not an OMERO.table"):
        flight_client.read_table(file_id=csv.file_id, omero_connector=direct_sign_in("alice"))


def test_data_dir_setting_needs_the_omero_backend(tmp_path):
    settings = load_settings({"omero_host": "omero.example.org", "omero_data_dir": str(tmp_path)},
                             environ={})
    assert settings.omero_data_dir == tmp_path
    assert load_settings({}, environ={"OMERO_FLIGHT_OMERO_HOST": "o",
                                      "OMERO_FLIGHT_OMERO_DATA_DIR": "/OMERO"}
                         ).omero_data_dir.as_posix() == "/OMERO"
    with pytest.raises(ConfigError, match="omero_data_dir needs omero_host"):
        load_settings({"omero_data_dir": str(tmp_path)}, environ={})


def test_chunks_larger_than_one_omero_call_read_the_same(private_table, sign_in, direct_sign_in,
                                                          monkeypatch):
    from flight_server.backends.omero import tables

    monkeypatch.setattr(tables, "MAX_CALL_BYTES", 4096)  # ~60 rows per Table.read / slice
    monkeypatch.setattr(tables, "MIN_CALL_ROWS", 1)
    kwargs: dict[str, Any] = {"annotation_id": private_table, "progress": False}
    ice, direct = sign_in("alice"), direct_sign_in("alice")
    for extra in ({}, {"chunk_size": 777}, {"column_names": ["label"], "chunk_size": 99_999},
                  {"rows": list(range(ROWS - 1, 0, -7))}):
        pd.testing.assert_frame_equal(
            flight_client.read_table(omero_connector=ice, **kwargs, **extra),
            flight_client.read_table(omero_connector=direct, **kwargs, **extra))


def test_row_lists_and_queries_in_small_pipelined_calls_read_the_same(
        private_table, sign_in, direct_sign_in, monkeypatch):
    """Through Ice, scattered rows are sliced a few per call with more calls in flight, dense
    runs are read as ranges and picked, and a query's next scan window is asked ahead: the
    rows are those PyTables reads from disk, in the order asked."""
    from flight_server import streaming
    from flight_server.backends.omero import tables

    monkeypatch.setattr(tables, "SLICE_ROWS", 7)
    monkeypatch.setattr(streaming, "SCAN_ROWS", 4_000)
    rng = np.random.default_rng(3)
    scattered = sorted(int(r) for r in rng.choice(ROWS, 300, replace=False))
    dense = list(range(10_000, 10_400)) + list(range(10_401, 10_800, 2))
    ice, direct = sign_in("alice"), direct_sign_in("alice")
    reads: list[dict[str, Any]] = [
        {"rows": scattered}, {"rows": scattered[::-1] + scattered[:5]}, {"rows": dense},
        {"rows": dense + scattered, "column_names": ["label"], "chunk_size": 333},
        {"query": "(area < 0.05) & valid", "chunk_size": 1000},
        {"query": "area < 0.5", "chunk_size": 1000, "column_names": ["object"]},
    ]
    for kwargs in reads:
        got = flight_client.read_table(annotation_id=private_table, omero_connector=ice,
                                       progress=False, **kwargs)
        pd.testing.assert_frame_equal(
            got, flight_client.read_table(annotation_id=private_table,
                                          omero_connector=direct, progress=False, **kwargs))
        assert len(got) > 0


def test_crafted_table_files_in_omeros_data_directory_are_refused(
        omero_bridge, sign_in, direct_sign_in, tmp_path):
    """An OMERO.tables file that reaches outside itself (external storage aimed at a file on
    the bridge's host, a virtual dataset over another table) is refused before PyTables
    reads it, in direct mode as in the embedded store (issue 10, finding 0)."""
    import shutil

    from flight_server.repository import original_file_path
    from tests.flight_server import hostile_hdf5

    world = omero_bridge.world
    outside = tmp_path / "outside-secret"
    outside.write_bytes(b"SECRET-CANARY-" * 64)
    alice = sign_in("alice")
    small = pd.DataFrame({"s": ["a", "b"], "n": [1, 2]})
    crafted = {
        "external storage": hostile_hdf5.external_storage(tmp_path / "ext.h5", outside),
        "virtual dataset": hostile_hdf5.virtual(tmp_path / "vds.h5",
                                                hostile_hdf5.template(tmp_path / "other.h5")),
    }
    for what, path in crafted.items():
        ann = flight_client.upload_table(small, what, omero_connector=alice, progress=False,
                                         parent_id=world.images[world.private_group])
        file_id = next(t["file_id"] for t in flight_client.list_tables(omero_connector=alice)
                       if t["annotation_id"] == ann)
        # As if written to OMERO by some other client: the bytes on OMERO's disk are crafted.
        shutil.copyfile(path, original_file_path(omero_bridge.standin.data_dir, file_id))
        with pytest.raises(flight_client.InvalidRequest) as refused:
            flight_client.read_table(file_id=file_id, omero_connector=direct_sign_in("alice"))
        assert "SECRET-CANARY" not in str(refused.value), what
