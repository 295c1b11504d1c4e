"""A client that goes away mid-read or mid-upload leaves nothing open or half-made in OMERO."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

pytest.importorskip("omero", reason="omero-py (with zeroc-ice 3.6) is not installed")

import flight_client  # noqa: E402
from flight_protocol.messages import TableTicket, UploadDescriptor  # noqa: E402

pytestmark = pytest.mark.omero


def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def bridge_client(bridge, user: str):
    client = flight.FlightClient(f"grpc://{bridge.host}:{bridge.port}")
    header = client.authenticate_basic_token(user, bridge.password(user))
    return client, flight.FlightCallOptions(headers=[header])


def mine(bridge) -> list:
    return [t for t in bridge.standin.open_tables() if t["user"] == "alice"]


def test_disconnect_mid_read_closes_the_table(omero_bridge, sign_in):
    image = omero_bridge.world.images[omero_bridge.world.shared_group]
    rows = 60_000
    table = pa.table({"id": np.arange(rows), "x": np.random.default_rng(1).normal(size=rows)})
    ann = flight_client.upload_table(table, "big", parent_id=image,
                                     omero_connector=sign_in("alice"), progress=False)
    assert mine(omero_bridge) == []
    client, options = bridge_client(omero_bridge, "alice")
    ticket = TableTicket(annotation_id=ann, chunk_size=500)
    reader = client.do_get(flight.Ticket(ticket.encode()), options)
    reader.read_chunk()
    assert len(mine(omero_bridge)) == 1  # open while the stream is live
    client.close()  # gone mid-stream, without reading to the end
    del reader
    wait_for(lambda: mine(omero_bridge) == [])


def test_abandoned_upload_leaves_no_table(omero_bridge, sign_in, omero_login):
    image = omero_bridge.world.images[omero_bridge.world.shared_group]
    conn = sign_in("alice")
    before = {t["file_id"] for t in flight_client.list_tables(omero_connector=conn)}
    client, options = bridge_client(omero_bridge, "alice")
    descriptor = UploadDescriptor(name="abandoned", links=(("Image", image),),
                                  explicit_commit=True)
    batch = pa.record_batch({"id": np.arange(1000)})
    writer, _ = client.do_put(flight.FlightDescriptor.for_command(descriptor.encode()),
                              batch.schema, options)
    writer.write_batch(batch)
    wait_for(lambda: len(mine(omero_bridge)) == 1)  # the table exists while rows arrive
    with pytest.raises(flight.FlightError, match="commit marker"):
        writer.close()  # ends the stream without the commit marker
    wait_for(lambda: mine(omero_bridge) == [])
    after = {t["file_id"] for t in flight_client.list_tables(omero_connector=conn)}
    assert after == before
    query = omero_login("alice").sf.getQueryService()
    assert query.findAllByQuery("select f from OriginalFile f where f.name = 'abandoned'",
                                None, {"omero.group": "-1"}) == []  # the file is deleted too
    client.close()
