"""A read through OMERO opens its table once: get_flight_info's open is kept for do_get.

The stand-in counts every ``openTable`` per OriginalFile (its status file), so
these tests see what OMERO.tables saw, not what the bridge believes.
"""

from __future__ import annotations

import pandas as pd
import pyarrow.flight as flight
import pytest

pytest.importorskip("omero", reason="omero-py (with zeroc-ice 3.6) is not installed")

import flight_client  # noqa: E402
from flight_protocol.messages import TableTicket  # noqa: E402

pytestmark = pytest.mark.omero

FRAME = pd.DataFrame({"id": list(range(10)), "x": [i / 2 for i in range(10)]})


@pytest.fixture
def table(omero_bridge, sign_in):
    world = omero_bridge.world
    alice = sign_in("alice")
    ann = flight_client.upload_table(FRAME, "opened once", omero_connector=alice,
                                     parent_id=world.images[world.shared_group], progress=False)
    file_id = next(t["file_id"] for t in flight_client.list_tables(omero_connector=alice)
                   if t["annotation_id"] == ann)
    return alice, ann, file_id


def _mine(standin, file_id):
    return [t for t in standin.open_tables() if t["file_id"] == file_id]


@pytest.mark.parametrize("read", [
    {}, {"rows": [3]}, {"rows": range(2, 3)}, {"query": "(id > 7)"},
    {"column_names": ["x"]},
])
def test_a_read_opens_its_table_once(omero_bridge, table, read):
    alice, ann, file_id = table
    standin = omero_bridge.standin
    before = standin.table_opens(file_id)
    got = flight_client.read_table(annotation_id=ann, omero_connector=alice, **read)
    assert len(got) >= 1
    assert standin.table_opens(file_id) - before == 1
    assert _mine(standin, file_id) == []  # the stream closed what planning opened


def test_planned_table_closes_when_unread(omero_bridge, sign_in, table):
    _, ann, file_id = table
    standin, backend = omero_bridge.standin, omero_bridge.backend
    conn = sign_in("alice")
    descriptor = flight.FlightDescriptor.for_command(TableTicket(annotation_id=ann).encode())
    info = conn.transport.flight_info(descriptor.command)
    assert info.total_records == len(FRAME)
    assert len(_mine(standin, file_id)) == 1  # parked for its do_get
    standin.wait_for_open_tables(lambda tables: not [t for t in tables
                                                      if t["file_id"] == file_id],
                                 timeout=backend.parked.lifetime + 10)


def test_sign_out_closes_planned_tables(omero_bridge, sign_in, table):
    _, ann, file_id = table
    standin = omero_bridge.standin
    conn = sign_in("alice")
    descriptor = flight.FlightDescriptor.for_command(TableTicket(annotation_id=ann).encode())
    conn.transport.flight_info(descriptor.command)
    assert len(_mine(standin, file_id)) == 1
    conn.transport.action("logout")
    assert _mine(standin, file_id) == []


def test_planned_table_is_only_for_that_sign_in(omero_bridge, sign_in, table):
    _, ann, file_id = table
    standin = omero_bridge.standin
    first, second = sign_in("alice"), sign_in("alice")
    descriptor = flight.FlightDescriptor.for_command(TableTicket(annotation_id=ann).encode())
    first.transport.flight_info(descriptor.command)
    before = standin.table_opens(file_id)
    got = flight_client.read_table(annotation_id=ann, omero_connector=second)
    assert len(got) == len(FRAME)
    assert standin.table_opens(file_id) - before == 1  # its own open, not the first's table
    assert len(_mine(standin, file_id)) == 1  # the first sign-in's, still parked
    first.transport.action("logout")
    assert _mine(standin, file_id) == []


def test_planning_many_reads_keeps_at_most_a_few_open(omero_bridge, sign_in):
    """A client planning reads it never makes: its sign-in keeps at most ``per_session``
    tables open (the oldest close), and every one closes at logout."""
    world, standin, backend = omero_bridge.world, omero_bridge.standin, omero_bridge.backend
    conn = sign_in("alice")
    limit = backend.parked.per_session
    anns = [flight_client.upload_table(FRAME, f"planned {i}", omero_connector=conn,
                                       parent_id=world.images[world.shared_group],
                                       progress=False) for i in range(limit + 2)]
    files = {t["annotation_id"]: t["file_id"]
             for t in flight_client.list_tables(omero_connector=conn)}
    ids = {files[a] for a in anns}
    for _ in range(2):
        for ann in anns:
            command = TableTicket(annotation_id=ann).encode()
            assert conn.transport.flight_info(command).total_records == len(FRAME)
        assert len([t for t in standin.open_tables() if t["file_id"] in ids]) <= limit
    conn.transport.action("logout")
    assert [t for t in standin.open_tables() if t["file_id"] in ids] == []


def test_reads_ask_omero_for_the_service_proxies_once_per_sign_in(omero_bridge, sign_in, table):
    """``getQueryService`` and ``sharedResources`` answer with the same servant for the whole
    session: a sign-in asks for them once, not once per read (two round trips less a read)."""
    _, ann, file_id = table
    standin = omero_bridge.standin
    conn = sign_in("alice")

    def read_and_settle() -> None:
        assert len(flight_client.read_table(annotation_id=ann, omero_connector=conn)) == 10
        standin.wait_for_open_tables(lambda tables: not [t for t in tables
                                                          if t["file_id"] == file_id])

    read_and_settle()
    before = standin.service_requests("alice")
    assert before.get("query", 0) >= 1 and before.get("shared", 0) >= 1
    for _ in range(4):
        read_and_settle()
    after = standin.service_requests("alice")
    assert (after.get("query", 0) - before["query"], after.get("shared", 0) - before["shared"]) \
        == (0, 0)
