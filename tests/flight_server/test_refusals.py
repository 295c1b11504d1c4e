"""Every refusal: its Flight error class, its code, a clear message, and the server keeps going."""

from __future__ import annotations

import json
import time

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flight_protocol.messages import TableTicket, encode_body
from tests.flight_server.wire import action, error_code, read, upload


@pytest.fixture(scope="module")
def alice(connect):
    return connect("alice")


@pytest.fixture(scope="module")
def table_id(alice):
    data = pa.table({"x": [1, 2, 3], "Roi Name": ["a", "b", "c"]})
    return upload(*alice, data, "refusals")["file_id"]


def refused(call, cls, code, *words):
    with pytest.raises(cls) as info:
        call()
    assert error_code(info.value) == code, info.value
    message = json.loads(info.value.extra_info)["message"]
    for word in words:
        assert word in message, message
    return message


@pytest.fixture(autouse=True)
def still_serving(connect):
    yield
    assert action(*connect("root"), "health")["status"] == "ok"


def raw_get(client, options, body: dict):
    return client.do_get(flight.Ticket(json.dumps(body).encode()), options=options).read_all()


def test_unknown_id(alice):
    refused(lambda: read(*alice, file_id=987654), flight.FlightServerError, "not_found",
            "987654", "does not exist")
    refused(lambda: read(*alice, annotation_id=987654), flight.FlightServerError, "not_found",
            "FileAnnotation 987654")


def test_plain_file_read_as_table(alice, bridge):
    info = bridge.store.add_file("alice", b"a\n1\n", "plain.csv")
    refused(lambda: read(*alice, file_id=info.file_id), flight.FlightServerError,
            "invalid_argument", "plain file", "not an OMERO.table")


def test_missing_column(alice, table_id):
    refused(lambda: read(*alice, file_id=table_id, columns=("x", "nope")),
            flight.FlightServerError, "invalid_argument", "'nope'")


def test_row_beyond_the_table(alice, table_id):
    refused(lambda: read(*alice, file_id=table_id, rows=(0, 3)), flight.FlightServerError,
            "invalid_argument", "row 3")


def test_rows_and_query_together(alice, table_id):
    body = TableTicket(file_id=table_id).to_json() | {"rows": [0], "query": "x > 1"}
    refused(lambda: raw_get(*alice, body), flight.FlightServerError, "invalid_argument",
            "rows and query")


@pytest.mark.parametrize("query, why", [
    ("__import__('os').system('x')", "not allowed"),
    ("x.__class__ > 1", "Attribute"),
    ("secret_name > 1", "unknown name"),
    ("(lambda: 1)() > 0", "not allowed"),
])
def test_unsafe_queries(alice, table_id, query, why):
    refused(lambda: read(*alice, file_id=table_id, query=query), flight.FlightServerError,
            "invalid_argument", "query refused", why)


def test_malformed_ticket_and_wrong_version(alice):
    client, options = alice
    refused(lambda: client.do_get(flight.Ticket(b"{not json"), options=options).read_all(),
            flight.FlightServerError, "invalid_argument", "not valid JSON")
    refused(lambda: raw_get(client, options, {"v": 99, "kind": "table", "file_id": 1}),
            flight.FlightServerError, "invalid_argument", "protocol version 99")


def test_wrong_password_and_reserved_session_user(bridge):
    client = flight.FlightClient(bridge.url)
    refused(lambda: client.authenticate_basic_token("alice", "wrong"),
            flight.FlightUnauthenticatedError, "unauthenticated", "wrong user name or password")
    refused(lambda: client.authenticate_basic_token("nobody", "x"),
            flight.FlightUnauthenticatedError, "unauthenticated", "wrong user name or password")
    refused(lambda: client.authenticate_basic_token("__session__", "some-key"),
            flight.FlightUnauthenticatedError, "unauthenticated", "OMERO backend")


def test_missing_tampered_and_expired_tokens(bridge, table_id):
    client = flight.FlightClient(bridge.url)
    refused(lambda: read(client, flight.FlightCallOptions(), file_id=table_id),
            flight.FlightUnauthenticatedError, "unauthenticated", "no credentials")
    refused(lambda: list(client.list_flights()), flight.FlightUnauthenticatedError,
            "unauthenticated")
    refused(lambda: action(client, flight.FlightCallOptions(), "health"),
            flight.FlightUnauthenticatedError, "unauthenticated")
    token = bridge.server.signer.issue("alice")
    payload, signature = token.split(".")
    forged = bridge.server.signer.issue("root").split(".")[0] + "." + signature
    for bad in (token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), forged):
        options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {bad}".encode())])
        refused(lambda o=options: read(client, o, file_id=table_id),
                flight.FlightUnauthenticatedError, "unauthenticated", "invalid token")
    old = bridge.server.signer.issue("alice", now=time.time() - 13 * 3600)
    options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {old}".encode())])
    refused(lambda: read(client, options, file_id=table_id),
            flight.FlightUnauthenticatedError, "unauthenticated", "expired")


def test_unstorable_types(alice, bridge):
    stamps = pa.table({"when": pa.array([1, 2], pa.timestamp("ms"))})
    refused(lambda: upload(*alice, stamps, "bad"), flight.FlightServerError,
            "invalid_argument", "'when'", "timestamp")
    nulls = pa.table({"n": pa.array([1, None, 3], pa.int64())})
    refused(lambda: upload(*alice, nulls, "bad"), flight.FlightServerError,
            "invalid_argument", "'n'", "null")
    assert not any(t.file.name == "bad" for t in bridge.store.list_tables(
        bridge.store.lookup_caller("root")))


def test_private_group_and_read_only_group(connect):
    carol, dave, bob, alice = (connect(u) for u in ("carol", "dave", "bob", "alice"))
    secret = upload(*carol, pa.table({"s": [1]}), "carol's")["file_id"]
    shared = upload(*alice, pa.table({"s": [2]}), "alice's")["file_id"]
    assert read(*carol, file_id=secret)["s"].to_pylist() == [1]
    # As OMERO: what the caller may not see does not exist for them, owner and group unsaid.
    hidden = refused(lambda: read(*dave, file_id=secret), flight.FlightServerError,
                     "not_found", "does not exist")
    missing = refused(lambda: read(*dave, file_id=987_654), flight.FlightServerError,
                      "not_found", "does not exist")
    assert hidden == missing.replace("987654", str(secret))
    assert "carol" not in hidden and "secret" not in hidden
    refused(lambda: read(*bob, file_id=secret), flight.FlightServerError, "not_found")
    assert read(*bob, file_id=shared)["s"].to_pylist() == [2]
    names = [t["name"] for t in action(*bob, "list_tables", encode_body())["tables"]]
    assert "alice's" in names and "carol's" not in names
    names = [t["name"] for t in action(*dave, "list_tables", encode_body())["tables"]]
    assert "carol's" not in names and "alice's" not in names
    root_names = [t["name"] for t in action(*connect("root"), "list_tables")["tables"]]
    assert {"carol's", "alice's"} <= set(root_names)
