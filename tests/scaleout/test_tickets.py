"""Signed range tickets against two replica processes: what any replica serves, what it refuses.

The replica that plans a read signs every endpoint's ticket for the caller; the other
replica checks it. Each refusal is typed and names what was wrong, never ``internal``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest

import flight_client
from flight_protocol.messages import RowRange, TableTicket, decode
from flight_server.auth import TokenSigner
from flight_server.backends.base import Caller
from flight_server.tickets import TicketSigner
from tests.conftest import PASSWORDS
from tests.flight_server.wire import error_code
from tests.scaleout.replicas import Replicas, start_replicas

ROWS = 5000
SPLIT = 1000


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tickets")


@pytest.fixture(scope="module")
def replicas(folder: Path):
    reps = start_replicas(folder, 2, SPLIT)
    yield reps
    reps.close()


@pytest.fixture(scope="module")
def key(folder: Path, replicas: Replicas) -> bytes:
    """The replicas' shared key (the test plays someone who holds it: the operator)."""
    return (folder / "token.key").read_bytes()


def _upload(replicas: Replicas, name: str) -> int:
    data = pa.table({"idx": pa.array(range(ROWS), pa.int64()),
                     "val": pa.array([i * 0.5 for i in range(ROWS)])})
    with flight_client.connect_to_omero(server=replicas.urls[0], username="alice",
                                        password=PASSWORDS["alice"], interactive=False,
                                        keep_alive=False) as conn:
        ann = flight_client.upload_table(data.to_pandas(), name, parent_id=1,
                                         omero_connector=conn, progress=False)
        return next(t["file_id"] for t in flight_client.list_tables(omero_connector=conn)
                    if t["annotation_id"] == ann)


@pytest.fixture(scope="module")
def tables(replicas: Replicas) -> tuple[int, int]:
    """Two of alice's tables in the read-only group ``lab``: bob may read both."""
    return _upload(replicas, "signed"), _upload(replicas, "other")


class Session:
    """A signed-in user on one replica (or, with ``header``, another replica's token)."""

    def __init__(self, url: str, user: str, header: tuple[bytes, bytes] | None = None) -> None:
        self.client = flight.FlightClient(url)
        if header is None:
            header = self.client.authenticate_basic_token(user, PASSWORDS[user])
        self.options = flight.FlightCallOptions(headers=[header], timeout=60)
        self.header = header

    def plan(self, ticket: TableTicket) -> flight.FlightInfo:
        return self.client.get_flight_info(
            flight.FlightDescriptor.for_command(ticket.encode()), self.options)

    def read(self, ticket: bytes | TableTicket) -> pa.Table:
        raw = ticket.encode() if isinstance(ticket, TableTicket) else ticket
        return self.client.do_get(flight.Ticket(raw), self.options).read_all()


@pytest.fixture(scope="module")
def alice(replicas: Replicas) -> list[Session]:
    """alice signed in on replica 0; ``[1]`` is the same token on replica 1."""
    first = Session(replicas.urls[0], "alice")
    return [first, Session(replicas.urls[1], "alice", first.header)]


def refused(call, cls, code: str, *words: str) -> str:
    with pytest.raises(cls) as info:
        call()
    assert error_code(info.value) == code, info.value
    message = json.loads(info.value.extra_info)["message"]
    for word in words:
        assert word in message, message
    return message


def signed_endpoint(session: Session, file_id: int, index: int = 1,
                    **selection) -> TableTicket:
    info = session.plan(TableTicket(file_id=file_id, **selection))
    ticket = decode(info.endpoints[index].ticket.ticket)
    assert isinstance(ticket, TableTicket) and ticket.grant is not None
    return ticket


def test_every_endpoint_is_signed_for_the_caller_and_served_by_the_other_replica(
        replicas: Replicas, alice: list[Session], tables: tuple[int, int]) -> None:
    info = alice[0].plan(TableTicket(file_id=tables[0], columns=("val",)))
    assert len(info.endpoints) == ROWS // SPLIT
    got = []
    for i, endpoint in enumerate(info.endpoints):
        ticket = decode(endpoint.ticket.ticket)
        grant = ticket.grant
        assert grant["user"] == 2 and grant["file_id"] == tables[0]  # alice is user 2
        assert grant["columns"] == ["val"] and grant["rows"] == [i * SPLIT, (i + 1) * SPLIT]
        assert grant["expires"] * 1e9 == pytest.approx(endpoint.expiration_time.value, abs=1e9)
        got.append(alice[1].read(endpoint.ticket.ticket))  # the replica that did not plan
    table = pa.concat_tables(got)
    assert table.column("__row__").to_pylist() == list(range(ROWS))
    assert table.column("val").to_pylist() == [i * 0.5 for i in range(ROWS)]


def test_a_signed_ticket_may_be_narrowed_as_resuming_and_projecting_do(
        alice: list[Session], tables: tuple[int, int]) -> None:
    ticket = signed_endpoint(alice[0], tables[0])  # rows 1000..2000, every column
    resumed = replace(ticket, rows=RowRange(1500, 2000), columns=("idx",))
    got = alice[1].read(resumed)
    assert got.column_names == ["__row__", "idx"]
    assert got.column("idx").to_pylist() == list(range(1500, 2000))


def test_a_plain_ticket_the_client_built_is_read_as_the_caller(
        alice: list[Session], tables: tuple[int, int]) -> None:
    plain = TableTicket(file_id=tables[0], rows=RowRange(10, 20), row_numbers=False)
    for session in alice:
        assert session.read(plain).column("idx").to_pylist() == list(range(10, 20))


def test_a_ticket_of_one_user_is_refused_to_another_who_may_read_the_table(
        replicas: Replicas, alice: list[Session], tables: tuple[int, int]) -> None:
    ticket = signed_endpoint(alice[0], tables[0])
    bob = Session(replicas.urls[1], "bob")
    plain = replace(ticket, grant=None)
    assert bob.read(plain).num_rows == SPLIT  # bob may read alice's table himself...
    refused(lambda: bob.read(ticket), flight.FlightUnauthorizedError,  # ...not with her ticket
            "permission_denied", "issued to user id 2", "'bob'")


def test_an_expired_ticket_is_refused(alice: list[Session], tables: tuple[int, int],
                                      key: bytes) -> None:
    ticket = signed_endpoint(alice[0], tables[0])
    # signed with the replicas' own key, as a plan made long ago would have been
    old = TicketSigner(key).issue(replace(ticket, grant=None), Caller(2, "alice"), tables[0],
                                  time.time() - 60)
    for session in alice:
        refused(lambda s=session: s.read(old), flight.FlightUnauthenticatedError,
                "unauthenticated", "this ticket expired at", "plan the read again")


def test_a_ticket_edited_to_other_rows_columns_or_table_is_refused(
        alice: list[Session], tables: tuple[int, int]) -> None:
    ticket = signed_endpoint(alice[0], tables[0], columns=("val",))  # rows 1000..2000
    grant = dict(ticket.grant)
    edits = [
        (replace(ticket, rows=RowRange(0, 2000)), "asks for rows 0..2000",
         "covers rows 1000..2000"),
        (replace(ticket, rows=RowRange(1000, None)), "covers rows 1000..2000"),
        (replace(ticket, rows=(5, 6)), "asks for other rows"),
        (replace(ticket, columns=("val", "idx")), "['idx'] are not among"),
        (replace(ticket, columns=None), "asks for every column"),
        (replace(ticket, file_id=tables[1]), f"names OriginalFile {tables[1]}",
         f"grant is for OriginalFile {tables[0]}"),
        (replace(ticket, file_id=None, annotation_id=1), "names FileAnnotation 1"),
        # the grant itself, edited to match: its signature no longer does
        (replace(ticket, rows=RowRange(0, 2000), grant={**grant, "rows": [0, 2000]}),
         "changed after the bridge signed it"),
        (replace(ticket, columns=None, grant={**grant, "columns": None}),
         "changed after the bridge signed it"),
        (replace(ticket, file_id=tables[1], grant={**grant, "file_id": tables[1]}),
         "changed after the bridge signed it"),
    ]
    for edited, *words in edits:
        refused(lambda e=edited: alice[1].read(e), flight.FlightUnauthorizedError,
                "permission_denied", *words)


def test_a_query_ticket_is_bound_to_its_query(alice: list[Session],
                                             tables: tuple[int, int]) -> None:
    ticket = signed_endpoint(alice[0], tables[0], 0, query="idx < 100")
    assert alice[1].read(ticket).num_rows == 100
    refused(lambda: alice[1].read(replace(ticket, query="idx < 4000")),
            flight.FlightUnauthorizedError, "permission_denied",
            "row list or query is not the one its grant was signed for")


def test_a_ticket_or_token_signed_with_another_key_is_refused(
        replicas: Replicas, alice: list[Session], tables: tuple[int, int]) -> None:
    ticket = signed_endpoint(alice[0], tables[0])
    foreign = TicketSigner(os.urandom(32)).issue(replace(ticket, grant=None),
                                                 Caller(2, "alice"), tables[0],
                                                 time.time() + 3600)
    for session in alice:
        refused(lambda s=session: s.read(foreign), flight.FlightUnauthenticatedError,
                "unauthenticated", "signed with another key", "token_secret_file")
    token = TokenSigner(os.urandom(32)).issue("alice", user_id=2, name="alice")
    stranger = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])
    for url in replicas.urls:
        client = flight.FlightClient(url)
        refused(lambda c=client: c.do_get(flight.Ticket(ticket.encode()), stranger).read_all(),
                flight.FlightUnauthenticatedError, "unauthenticated",
                "invalid token: it was signed with another key")
        client.close()


@pytest.mark.parametrize("grant", [
    {"user": 2},
    {"user": "2", "file_id": 1, "columns": None, "rows": [0, 1], "select": None,
     "expires": 1, "key": "k", "sig": "s"},
    {"user": 2, "file_id": 1, "columns": None, "rows": None, "select": None,
     "expires": 1, "key": "k", "sig": "s"},
    [1, 2],
])
def test_a_malformed_grant_is_an_invalid_argument(alice: list[Session], tables: tuple[int, int],
                                                  grant: object) -> None:
    raw = json.loads(TableTicket(file_id=tables[0]).encode())
    raw["grant"] = grant
    refused(lambda: alice[1].read(json.dumps(raw).encode()), flight.FlightServerError,
            "invalid_argument", "grant")


def test_a_file_read_names_every_replica(replicas: Replicas, alice: list[Session],
                                         tmp_path: Path) -> None:
    from flight_protocol.messages import FileTicket

    csv = tmp_path / "plain.csv"
    csv.write_bytes(b"a,b\n1,2\n")
    ann = flight_client.upload_file(csv, parent_id=1, server=replicas.urls[1], username="alice",
                                    password=PASSWORDS["alice"], progress=False)
    ticket = FileTicket(annotation_id=ann)
    info = alice[0].client.get_flight_info(
        flight.FlightDescriptor.for_command(ticket.encode()), alice[0].options)
    (endpoint,) = info.endpoints
    assert [loc.uri.decode() for loc in endpoint.locations] == replicas.urls
    data = alice[1].client.do_get(endpoint.ticket, alice[1].options).read_all()
    assert b"".join(data.column("data").to_pylist()) == b"a,b\n1,2\n"
