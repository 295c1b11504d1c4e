"""A table's file is opened once for all the reads that come close together.

The embedded store plans a read (``get_flight_info``) and streams it (``do_get``) on
one open file, shared by every read of it and kept ``linger`` seconds after the last
(``backends/formats/shared``); ``readers.opened`` counts the real opens (the trust
check and PyTables). Permission is still checked on every read.
"""

from __future__ import annotations

import time

import pandas as pd
import pytest

import flight_client
from flight_server.backends.local import LocalStore
from flight_server.service import FlightService
from tests.conftest import PASSWORDS

FRAME = pd.DataFrame({"id": list(range(10)), "label": [f"cell {i}" for i in range(10)]})


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    store = LocalStore(tmp_path_factory.mktemp("shared") / "store")
    store.add_group("lab", "read-only")
    store.add_group("secret", "private")
    for name in ("alice", "bob"):
        store.add_user(name, PASSWORDS[name], ["lab"])
    store.add_user("carol", PASSWORDS["carol"], ["secret"])
    store.readers.linger = 0.5
    server = FlightService(store, "grpc://127.0.0.1:0", split_rows=4)
    yield store, server
    server.shutdown()
    store.close()


def _sign_in(server, name):
    return flight_client.connect_to_omero(server=server.url, username=name,
                                          password=PASSWORDS[name], interactive=False,
                                          allow_token=False, keep_alive=False)


@pytest.fixture(scope="module")
def table(served):
    _, server = served
    alice = _sign_in(server, "alice")
    ann = flight_client.upload_table(FRAME, "opened once", links=[("Image", 1)],
                                     omero_connector=alice, progress=False)
    yield alice, ann
    alice.shutdown()


def _quiet(store):
    deadline = time.monotonic() + store.readers.linger + 10
    while store.readers.idle() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.readers.idle() == 0


@pytest.mark.parametrize("read", [
    {}, {"rows": [3, 1]}, {"query": "(id > 7)"}, {"column_names": ["label"]},
])
def test_a_read_opens_its_file_once(served, table, read):
    store, _ = served
    alice, ann = table
    _quiet(store)
    before = store.readers.opened
    got = flight_client.read_table(annotation_id=ann, omero_connector=alice, progress=False,
                                   **read)
    assert len(got) >= 1
    assert store.readers.opened - before == 1  # planning, 3 endpoints of 4 rows: one open
    assert store.open_tables() == []  # every read's handle closed
    assert store.readers.idle() == 1  # the file, kept for the next read
    _quiet(store)  # and closed after linger seconds


def test_reads_by_others_share_the_file_but_not_the_permission(served, table):
    store, server = served
    alice, ann = table
    flight_client.read_table(annotation_id=ann, omero_connector=alice, progress=False)
    opened = store.readers.opened
    bob, carol = _sign_in(server, "bob"), _sign_in(server, "carol")
    try:
        assert flight_client.read_table(annotation_id=ann, omero_connector=bob,
                                        progress=False).equals(FRAME)
        assert store.readers.opened == opened  # the same open file
        for read in ({}, {"rows": [1]}):  # planned first, or one do_get
            with pytest.raises(flight_client.errors.NotFound):
                flight_client.read_table(annotation_id=ann, omero_connector=carol,
                                         progress=False, **read)
    finally:
        bob.shutdown()
        carol.shutdown()


def test_closing_the_store_closes_its_files(tmp_path):
    store = LocalStore(tmp_path / "store")
    store.add_group("lab", "read-only")
    store.add_user("alice", PASSWORDS["alice"], ["lab"])
    server = FlightService(store, "grpc://127.0.0.1:0")
    try:
        alice = _sign_in(server, "alice")
        ann = flight_client.upload_table(FRAME, "t", links=[("Image", 1)],
                                         omero_connector=alice, progress=False)
        flight_client.read_table(annotation_id=ann, omero_connector=alice, progress=False)
        assert store.readers.idle() == 1
        alice.shutdown()
    finally:
        server.shutdown()
        store.close()
    assert store.readers.idle() == 0
