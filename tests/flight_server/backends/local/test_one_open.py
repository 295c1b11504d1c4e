"""A read from the embedded store opens its table once: get_flight_info's open serves do_get.

The store counts its opens here by a subclass that wraps ``_open_table`` (the real store,
real files, a real Flight server over loopback); ``open_tables`` reports the handles
open now, so a planned read that is never fetched is seen to close when its time is up.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

import flight_client
from flight_protocol.messages import TableTicket
from flight_server.backends.local import LocalStore
from flight_server.service import FlightService
from tests.conftest import PASSWORDS

FRAME = pd.DataFrame({"id": list(range(10)), "label": [f"cell {i}" for i in range(10)]})


class CountingStore(LocalStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.opens: list[int | None] = []

    def _open_table(self, caller, ref):
        self.opens.append(ref.file_id if ref.file_id is not None else ref.annotation_id)
        return super()._open_table(caller, ref)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    store = CountingStore(tmp_path_factory.mktemp("one-open") / "store")
    store.add_group("lab", "read-only")
    for name in ("alice", "bob"):
        store.add_user(name, PASSWORDS[name], ["lab"])
    store.parked.lifetime = 1.0
    server = FlightService(store, "grpc://127.0.0.1:0")
    yield store, server
    server.shutdown()
    store.close()


def _sign_in(server, name):
    return flight_client.connect_to_omero(server=server.url, username=name,
                                          password=PASSWORDS[name], interactive=False,
                                          allow_token=False, keep_alive=False)


@pytest.fixture(scope="module")
def table(served):
    store, server = served
    alice = _sign_in(server, "alice")
    ann = flight_client.upload_table(FRAME, "opened once", links=[("Image", 1)],
                                     omero_connector=alice, progress=False)
    yield alice, ann
    alice.shutdown()


@pytest.mark.parametrize("read", [
    {}, {"rows": [3, 1]}, {"query": "(id > 7)"}, {"column_names": ["label"]},
])
def test_a_read_opens_its_table_once(served, table, read):
    store, _ = served
    alice, ann = table
    before = len(store.opens)
    got = flight_client.read_table(annotation_id=ann, omero_connector=alice, progress=False,
                                   **read)
    assert len(got) >= 1
    assert len(store.opens) - before == 1
    assert store.open_tables() == []  # the stream closed what planning opened


def test_another_user_takes_nothing_planned(served, table):
    store, server = served
    alice, ann = table
    info = alice.transport.flight_info(TableTicket(annotation_id=ann).encode())
    assert len(store.open_tables()) == 1  # parked under alice's name
    bob = _sign_in(server, "bob")
    try:
        before = len(store.opens)
        got = flight_client.read_table(annotation_id=ann, omero_connector=bob, progress=False)
        assert got.equals(FRAME)
        assert len(store.opens) - before == 1  # his own open, not alice's parked table
        assert len(store.open_tables()) == 1  # alice's is still parked
    finally:
        bob.shutdown()
    assert info.total_records == len(FRAME)


def test_a_planned_table_never_read_closes(served, table):
    store, _ = served
    alice, ann = table
    alice.transport.flight_info(TableTicket(annotation_id=ann).encode())
    assert store.open_tables() != []
    deadline = time.monotonic() + store.parked.lifetime + 10
    while store.open_tables() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.open_tables() == []


def test_closing_the_store_closes_parked_tables(tmp_path):
    store = LocalStore(tmp_path / "store")
    store.add_group("lab", "read-only")
    store.add_user("alice", PASSWORDS["alice"], ["lab"])
    server = FlightService(store, "grpc://127.0.0.1:0")
    try:
        alice = _sign_in(server, "alice")
        ann = flight_client.upload_table(FRAME, "t", links=[("Image", 1)],
                                         omero_connector=alice, progress=False)
        alice.transport.flight_info(TableTicket(annotation_id=ann).encode())
        assert len(store.open_tables()) == 1
        alice.shutdown()
    finally:
        server.shutdown()
        store.close()
    assert store.open_tables() == []
