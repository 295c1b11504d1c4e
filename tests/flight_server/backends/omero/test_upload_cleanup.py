"""An upload whose OMERO session ends mid-way leaves no OriginalFile (issue 11).

The bridge's own OMERO session for the uploader is killed (joined by its key
and closed, as an administrator or OMERO's own timeout would) while rows are
arriving; the upload then fails, and the file it started is deleted through
the upload's spare session (``backends.omero.cleanup``).
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

pytest.importorskip("omero", reason="omero-py (with zeroc-ice 3.6) is not installed")

from flight_protocol.messages import (  # noqa: E402
    COMMIT_METADATA,
    FileUploadDescriptor,
    UploadDescriptor,
)
from flight_server.backends.omero.lookup import query_params  # noqa: E402

pytestmark = pytest.mark.omero


def original_files(omero_login, name: str) -> list[int]:
    """Ids of the OriginalFiles called ``name``, as root sees them (every group)."""
    query = omero_login("root").sf.getQueryService()
    found = query.findAllByQuery("select f from OriginalFile f where f.name = :name",
                                 query_params(name=name), {"omero.group": "-1"})
    return sorted(f.id.val for f in found)


def all_original_files(omero_login) -> int:
    query = omero_login("root").sf.getQueryService()
    return len(query.findAllByQuery("select f from OriginalFile f", None, {"omero.group": "-1"}))


def kill_omero_session_of(bridge, header) -> None:
    """End the OMERO session behind a bridge token, from outside the bridge."""
    import omero

    handle = bridge.server.signer.verify(header[1].decode().split(" ", 1)[1])
    key = bridge.backend.sessions.get(handle).client.getSessionId()
    killer = omero.client(bridge.standin.host, bridge.standin.port)
    killer.joinSession(key)
    killer.killSession()


def wait_until(condition, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("kind", ["table", "file"])
def test_an_upload_whose_session_ends_midway_leaves_no_original_file(omero_bridge, omero_login,
                                                                     kind):
    name = f"ended mid-way ({kind})"
    before = all_original_files(omero_login)
    client = flight.FlightClient(f"grpc://{omero_bridge.host}:{omero_bridge.port}")
    header = client.authenticate_basic_token("alice", omero_bridge.password("alice"))
    options = flight.FlightCallOptions(headers=[header])
    if kind == "table":
        descriptor = UploadDescriptor(name=name, explicit_commit=True)
        batch = pa.record_batch({"id": np.arange(1000, dtype=np.int64)})
    else:
        descriptor = FileUploadDescriptor(name=name, explicit_commit=True)
        batch = pa.record_batch({"data": pa.array([b"x" * 1000], type=pa.binary())})
    writer, _ = client.do_put(flight.FlightDescriptor.for_command(descriptor.encode()),
                              batch.schema, options)
    writer.write_batch(batch)
    wait_until(lambda: len(original_files(omero_login, name)) == 1)  # started in OMERO
    kill_omero_session_of(omero_bridge, header)
    with pytest.raises(flight.FlightError):
        for _ in range(50):  # the bridge notices at its next OMERO call
            writer.write_batch(batch)
            time.sleep(0.02)
        writer.write_metadata(COMMIT_METADATA)
        writer.done_writing()
        writer.close()
    wait_until(lambda: original_files(omero_login, name) == [])
    assert all_original_files(omero_login) == before
    client.close()

