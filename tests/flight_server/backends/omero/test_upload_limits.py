"""OMERO uploads within OMERO's limits (issue 11): calls split by bytes under Ice.MessageSizeMax,
and tables too wide for HDF5's compound type refused before anything exists in OMERO."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

pytest.importorskip("omero", reason="omero-py (with zeroc-ice 3.6) is not installed")

import flight_client  # noqa: E402
from flight_protocol.columns import omero_schema  # noqa: E402
from flight_server.backends.omero.sessions import message_size_max  # noqa: E402
from flight_server.backends.omero.writer import (  # noqa: E402
    call_bytes,
    call_ranges,
    row_bytes,
)
from flight_server.errors import InvalidArgument  # noqa: E402

pytestmark = pytest.mark.omero

CELL = 6_000
ROWS = 50_000


def original_files(omero_login, name: str) -> list[int]:
    """Ids of the OriginalFiles called ``name``, as root sees them (every group)."""
    query = omero_login("root").sf.getQueryService()
    found = query.findAllByQuery("select f from OriginalFile f where f.name = :name",
                                 _params(name), {"omero.group": "-1"})
    return sorted(f.id.val for f in found)


def _params(name: str):
    from flight_server.backends.omero.lookup import query_params

    return query_params(name=name)


def test_calls_are_split_by_bytes_as_well_as_rows():
    sizes = np.array([10, 10, 10, 50, 10, 10], dtype=np.int64)
    assert list(call_ranges(sizes, max_rows=100, max_bytes=50)) == [(0, 3), (3, 4), (4, 6)]
    assert list(call_ranges(sizes, max_rows=2, max_bytes=1000)) == [(0, 2), (2, 4), (4, 6)]
    with pytest.raises(InvalidArgument, match="row 3 holds 50 bytes"):
        list(call_ranges(sizes, max_rows=100, max_bytes=40))
    schema = omero_schema(pa.schema([pa.field("s", pa.string()), pa.field("x", pa.float64())]))
    batch = pa.record_batch([pa.array(["ab", "ünï", None]), pa.array([1.0, 2.0, 3.0])],
                            schema=schema)
    assert row_bytes(batch, schema).tolist() == [2 + 5 + 8, 5 + 5 + 8, 0 + 5 + 8]


def test_the_call_budget_follows_the_clients_message_limit(omero_bridge, omero_login):
    client = omero_login("alice")
    limit = message_size_max(client)
    assert limit == int(client.getProperty("Ice.MessageSizeMax")) * 1024
    assert 0 < call_bytes(limit) <= limit // 4


@pytest.mark.slow
def test_a_300_mb_upload_of_large_strings_goes_in_several_calls(omero_bridge, omero_login):
    """50,000 rows of 6,000-byte strings in one batch: over OMERO's 250 MB message limit in
    one call. The batch goes to the OMERO backend as the upload receiver hands it over
    (whatever gRPC's own message limit lets a client send at once)."""
    from flight_protocol.columns import omero_schema, with_string_sizes
    from flight_server.backends.base import TableRef

    standin, backend = omero_bridge.standin, omero_bridge.backend
    name = "large strings"
    points = pa.array([f"{i:08d}" + "p" * (CELL - 8) for i in range(ROWS)], type=pa.string())
    batch = pa.record_batch({"id": pa.array(np.arange(ROWS, dtype=np.int64)), "points": points})
    del points
    assert batch.nbytes > 300_000_000
    schema = with_string_sizes(omero_schema(batch.schema), {"points": CELL})
    batch = batch.cast(schema)
    calls_before = standin.status()["table_calls"]["addData"]
    caller = backend.authenticate("alice", omero_bridge.password("alice"))
    try:
        writer = backend.create_table(caller, name, schema, ())
        try:
            writer.append(batch)
            result = writer.commit()
        except BaseException:
            writer.abort()
            raise
        del batch
        assert result.rows == ROWS
        calls = standin.status()["table_calls"]["addData"] - calls_before
        assert calls > 1, calls  # several addData calls, counted by the stand-in's OMERO.tables
        rows = np.array([0, 1, 12_345, ROWS - 1])
        with backend.open_table(caller, TableRef(annotation_id=result.annotation_id)) as table:
            assert table.num_rows == ROWS
            back = table.read_rows(["id", "points"], rows)
        assert back.column("id").to_pylist() == rows.tolist()
        assert back.column("points").to_pylist() == [f"{i:08d}" + "p" * (CELL - 8)
                                                      for i in rows]
        assert len(original_files(omero_login, name)) == 1
    finally:
        backend.logout(caller)


@pytest.mark.slow
def test_a_call_omero_drops_says_so_and_leaves_no_file(omero_bridge, omero_login, monkeypatch):
    """What happened before calls were split by bytes, forced by letting one call carry twice
    the client's message limit: OMERO drops the connection and the user's session. The
    answer says what happened (not "retry in 5 s"), and no orphan OriginalFile stays."""
    from flight_protocol.columns import omero_schema, with_string_sizes
    from flight_server.backends.omero import writer as omero_writer
    from flight_server.errors import Unavailable

    monkeypatch.setattr(omero_writer, "call_bytes", lambda limit: 2 * limit)
    backend = omero_bridge.backend
    name = "dropped call"
    points = pa.array([f"{i:08d}" + "p" * (CELL - 8) for i in range(ROWS)], type=pa.string())
    batch = pa.record_batch({"points": points})
    del points
    schema = with_string_sizes(omero_schema(batch.schema), {"points": CELL})
    batch = batch.cast(schema)
    caller = backend.authenticate("alice", omero_bridge.password("alice"))
    writer = backend.create_table(caller, name, schema, ())
    try:
        with pytest.raises(Unavailable, match="dropped the connection") as info:
            writer.append(batch)
    finally:
        writer.abort()
    assert "retry in" not in str(info.value)
    assert original_files(omero_login, name) == []


def test_a_table_too_wide_for_hdf5_is_refused_before_omero_sees_it(omero_bridge, sign_in,
                                                                     omero_login):
    conn = sign_in("alice")
    name = "cellprofiler export"
    columns = [f"Intensity_MeanIntensity_Channel{i:04d}" for i in range(800)]
    assert {len(c) for c in columns} == {35}
    frame = pd.DataFrame(np.zeros((3, 800)), columns=columns)
    with pytest.raises(flight_client.InvalidRequest, match="65,535") as info:
        flight_client.upload_table(frame, name, omero_connector=conn, progress=False,
                                   parent_id=omero_bridge.world.images[omero_bridge.world
                                                                       .shared_group])
    assert info.value.code == "invalid_argument"
    assert "column names" in str(info.value)
    assert original_files(omero_login, name) == []
    # 600 such columns fit, and are stored whole.
    ann = flight_client.upload_table(frame.iloc[:, :600], name, omero_connector=conn,
                                     progress=False, parent_id=omero_bridge.world.images[
                                         omero_bridge.world.shared_group])
    back = flight_client.read_table(annotation_id=ann, omero_connector=conn, progress=False)
    assert back.shape == (3, 600)
    assert len(original_files(omero_login, name)) == 1
