"""An annotation the caller can read never leads to a file the caller cannot (issue 10, 2b).

alice owns a table in ``private-lab`` (rw----: bob, a member too, cannot see
it) and annotates it from ``shared-lab`` (rwr---: bob reads it). Through the
bridge, in both read modes (OMERO.tables over Ice, and direct reads from the
data directory), bob is told "not found" for the table, its file and its
file_info, and learns neither its name, nor its owner, nor its group; alice
reads it as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.flight as flight
import pytest

pytest.importorskip("omero", reason="omero-py (with zeroc-ice 3.6) is not installed")

import omero.model  # noqa: E402

import flight_client  # noqa: E402
from flight_protocol.messages import FileTicket, TableTicket  # noqa: E402
from flight_server.backends.base import TableRef  # noqa: E402
from flight_server.errors import NotFound  # noqa: E402
from tests.flight_server.wire import error_code  # noqa: E402

pytestmark = pytest.mark.omero

HIDDEN_NAME = "secret-measurements"
FRAME = pd.DataFrame({"cell": np.arange(50, dtype=np.int64), "area": np.linspace(0, 1, 50)})


@pytest.fixture(scope="module", params=["alice", "ivy"])
def hidden(omero_bridge, request) -> dict[str, Any]:
    """A table in its owner's private group (alice: in private-lab, rw----, where bob is a
    member too; ivy: in ivy-lab, which bob is not in at all), and a FileAnnotation on it in
    the shared group that bob reads."""
    world, seed = omero_bridge.world, omero_bridge.standin.seed
    owner = request.param
    group = world.private_group if owner == "alice" else "ivy-lab"
    if owner not in seed.user_ids:
        seed.group(group, "rw----")
        seed.user(owner, f"{owner}-password", [group, world.shared_group])
    table = seed.table(owner, group, FRAME, HIDDEN_NAME)
    annotation = omero.model.FileAnnotationI()
    annotation.file = omero.model.OriginalFileI(table.file_id, False)
    shared = seed.save(owner, world.shared_group, annotation).id.val
    image = seed.image(owner, world.shared_group, "shared image")
    seed.link(owner, world.shared_group, ("Image", image), ("FileAnnotation", shared))
    return {"file_id": table.file_id, "shared_annotation": shared, "owner": owner,
            "group": group}


@pytest.fixture(scope="module")
def bridges(omero_bridge) -> Iterator[dict[str, Any]]:
    """The Ice-mode bridge and a direct-mode bridge over the same stand-in."""
    from flight_server.backends.omero import OmeroBackend
    from flight_server.service import FlightService

    standin = omero_bridge.standin
    backend = OmeroBackend(standin.host, standin.port, data_dir=standin.data_dir)
    server = FlightService(backend, "grpc://127.0.0.1:0")
    yield {"ice": (omero_bridge.backend, omero_bridge.port),
           "direct": (backend, server.port)}
    server.shutdown()
    backend.close()


def flight_client_for(bridges, mode: str, user: str, password: str):
    client = flight.FlightClient(f"grpc://127.0.0.1:{bridges[mode][1]}")
    header = client.authenticate_basic_token(user, password)
    return client, flight.FlightCallOptions(headers=[header])


def says_nothing_about_the_file(exc: BaseException, hidden: dict[str, Any]) -> None:
    """Neither the hidden file's name, nor its owner, nor its group."""
    text = str(exc)
    assert HIDDEN_NAME not in text
    assert hidden["group"] not in text and hidden["owner"] not in text


@pytest.mark.parametrize("mode", ["ice", "direct"])
def test_a_readable_annotation_does_not_open_a_hidden_file(omero_bridge, bridges, hidden, mode):
    client, options = flight_client_for(bridges, mode, "bob", omero_bridge.password("bob"))
    ref = {"annotation_id": hidden["shared_annotation"]}
    for request in (TableTicket(**ref), FileTicket(**ref), TableTicket(file_id=hidden["file_id"])):
        descriptor = flight.FlightDescriptor.for_command(request.encode())
        with pytest.raises(flight.FlightError) as info:
            client.get_flight_info(descriptor, options)
        assert error_code(info.value) == "not_found"
        says_nothing_about_the_file(info.value, hidden)
        with pytest.raises(flight.FlightError) as info:
            client.do_get(flight.Ticket(request.encode()), options).read_all()
        assert error_code(info.value) == "not_found"
        says_nothing_about_the_file(info.value, hidden)
    client.close()
    # The backend's own answer, for the caller bob: not found, nothing about the file.
    backend = bridges[mode][0]
    bob = backend.authenticate("bob", omero_bridge.password("bob"))
    try:
        with pytest.raises(NotFound) as info:
            backend.file_info(bob, TableRef(annotation_id=hidden["shared_annotation"]))
        says_nothing_about_the_file(info.value, hidden)
        listed = backend.list_tables(bob)
        assert hidden["file_id"] not in {t.file.file_id for t in listed}
        assert HIDDEN_NAME not in {t.file.name for t in listed}
    finally:
        backend.logout(bob)


@pytest.mark.parametrize("mode", ["ice", "direct"])
def test_the_owner_still_reads_through_the_shared_annotation(omero_bridge, bridges, hidden, mode):
    owner = hidden["owner"]
    conn = flight_client.connect_to_omero(
        server="127.0.0.1", port=bridges[mode][1], username=owner,
        password=omero_bridge.password(owner), interactive=False, keep_alive=False,
        allow_token=False)
    try:
        got = flight_client.read_table(annotation_id=hidden["shared_annotation"],
                                       omero_connector=conn, progress=False)
        pd.testing.assert_frame_equal(got, FRAME)
        listed = {t["annotation_id"] for t in flight_client.list_tables(omero_connector=conn)}
        assert hidden["shared_annotation"] in listed
    finally:
        conn.shutdown()


def test_a_plain_upload_cannot_pose_as_a_table(omero_bridge, omero_login):
    """A file the user writes as bytes is never an OMERO.table (it could be HDF5 pointing at
    files outside itself): the bridge refuses the mimetype before anything exists in OMERO."""
    import pyarrow as pa

    from flight_protocol.messages import FileUploadDescriptor

    client = flight.FlightClient(f"grpc://127.0.0.1:{omero_bridge.port}")
    header = client.authenticate_basic_token("bob", omero_bridge.password("bob"))
    options = flight.FlightCallOptions(headers=[header])
    for mimetype in ("OMERO.tables", "omero.TABLES "):
        descriptor = FileUploadDescriptor(name="posing.h5", mimetype=mimetype)
        batch = pa.record_batch({"data": pa.array([b"\x89HDF\r\n\x1a\n"], type=pa.binary())})
        with pytest.raises(flight.FlightError) as info:
            writer, answer = client.do_put(
                flight.FlightDescriptor.for_command(descriptor.encode()), batch.schema, options)
            writer.write_batch(batch)
            writer.done_writing()
            answer.read()
            writer.close()
        assert error_code(info.value) == "invalid_argument"
        assert "upload_table" in str(info.value)
    query = omero_login("root").sf.getQueryService()
    assert query.findAllByQuery("select f from OriginalFile f where f.name = 'posing.h5'", None,
                                {"omero.group": "-1"}) == []
    client.close()
