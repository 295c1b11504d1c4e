"""Each client exception, raised by a real server condition."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pyarrow.flight as flight
import pytest

import flight_client
from flight_client import errors
from flight_client.transport import Transport
from flight_protocol.messages import TableTicket, UploadDescriptor, encode_body


def login(bridge, user: str) -> dict[str, object]:
    return {"server": bridge.url, "username": user, "password": bridge.passwords[user]}


def test_tree():
    assert issubclass(errors.InvalidRequest, ValueError)
    assert issubclass(errors.NotFound, LookupError)
    for name in ("ConnectionFailed", "AuthenticationFailed", "PermissionDenied", "NotFound",
                 "InvalidRequest", "ServerBusy", "ServerError", "MissingDependency",
                 "NotSupported"):
        assert issubclass(getattr(errors, name), errors.OmeroFlightError)


def test_wrong_password(bridge):
    with pytest.raises(flight_client.AuthenticationFailed, match="password"):
        flight_client.connect_to_omero(server=bridge.url, username="alice", password="nope",
                                       interactive=False)


def test_hidden_table_is_not_found(bridge, table):
    """As OMERO: a table the caller may not see is "not found", its owner unnamed."""
    with pytest.raises(flight_client.NotFound, match="does not exist") as info:
        flight_client.read_table(file_id=table.file_id, **login(bridge, "carol"))
    assert info.value.code == "not_found" and "alice" not in info.value.message


def _schema(transport: Transport, command: bytes):
    client = transport._client()
    descriptor = flight.FlightDescriptor.for_command(command)
    return transport.call(lambda: client.get_schema(descriptor, transport.options()))


def test_get_schema_refusals_are_typed(bridge, table):
    """pyarrow's get_schema loses Flight error types on both ends; the client still gets
    the bridge's code and message, with no traceback."""
    transport = Transport(bridge.url, retries=0)
    transport.authenticate("alice", bridge.passwords["alice"])
    assert _schema(transport, TableTicket(file_id=table.file_id).encode()).schema.names[0] == \
        "__row__"
    with pytest.raises(flight_client.NotFound, match="OriginalFile 987654 does not exist") \
            as info:
        _schema(transport, TableTicket(file_id=987654).encode())
    assert info.value.code == "not_found"
    for bad in (b"{not json", UploadDescriptor("x").encode(),
                b'{"v":1,"kind":"table","file_id":"5"}'):
        with pytest.raises(flight_client.InvalidRequest) as info:
            _schema(transport, bad)
        assert info.value.code == "invalid_argument"
        assert "Traceback" not in info.value.message and ".py" not in info.value.message
    transport.close()
    anonymous = Transport(bridge.url, retries=0)
    with pytest.raises(flight_client.AuthenticationFailed, match="no credentials"):
        _schema(anonymous, TableTicket(file_id=table.file_id).encode())
    anonymous.close()


def test_permission_denied_code(flaky):
    server = flaky("permission_denied", 1)
    transport = Transport(f"grpc://127.0.0.1:{server.port}", retries=0)
    with pytest.raises(flight_client.PermissionDenied) as info:
        transport.action("health")
    assert info.value.code == "permission_denied"
    transport.close()


def test_not_found(alice):
    with pytest.raises(flight_client.NotFound) as info:
        flight_client.get_table_size(file_id=987654, **alice)
    assert info.value.code == "not_found"


def test_invalid_query_from_server(table, conn):
    with pytest.raises(ValueError) as info:  # old scripts catch ValueError
        flight_client.read_table(file_id=table.file_id, query="nosuchcolumn > 1",
                                 omero_connector=conn)
    assert isinstance(info.value, flight_client.InvalidRequest)
    assert info.value.code == "invalid_argument"


def test_rows_and_query_refused_before_any_call(alice, table):
    closed = flight_client.connect_to_omero(**alice)
    closed.shutdown()  # any network use would raise ConnectionClosed instead
    with pytest.raises(flight_client.InvalidRequest, match="rows or query"):
        flight_client.read_table(file_id=table.file_id, rows=[1], query="id>1",
                                 omero_connector=closed)
    with pytest.raises(ValueError, match="not both"):
        flight_client.download_table("x.csv", file_id=1, annotation_id=2,
                                     omero_connector=closed)


def test_nullable_integers_refused_by_server(conn):
    df = pd.DataFrame({"n": pd.array([1, None, 3], dtype="Int64")})
    with pytest.raises(flight_client.InvalidRequest, match="column .n. has 1 null"):
        flight_client.upload_table(df, "with NA", parent_id=1, omero_connector=conn)


def test_missing_optional_library(monkeypatch, table, conn):
    monkeypatch.setitem(sys.modules, "polars", None)
    with pytest.raises(flight_client.MissingDependency, match=r"omero-flight\[polars\]"):
        flight_client.read_polars(file_id=table.file_id, omero_connector=conn)


def test_tiledb_registration_needs_the_web_address_and_a_session(conn, bridge, tmp_path,
                                                                  monkeypatch):
    monkeypatch.delenv("OMERO_FLIGHT_WEB_URL", raising=False)
    with pytest.raises(flight_client.MissingConnectionDetails, match="OMERO_FLIGHT_WEB_URL"):
        flight_client.upload_table(pd.DataFrame({"a": [1]}), "t", parent_id=1,
                                   local_path=tmp_path / "t.tiledb", server=bridge.url,
                                   username="__session__", password="key")
    assert not (tmp_path / "t.tiledb").exists()
    # A password login has no session key: the bridge would register, but this one cannot.
    with pytest.raises(flight_client.InvalidRequest, match="embedded store.*is kept"):
        flight_client.upload_table(pd.DataFrame({"a": [1]}), "t", parent_id=1,
                                   local_path=tmp_path / "t.tiledb", omero_connector=conn)


def test_existing_target(tmp_path, table, conn):
    target = tmp_path / "exists.csv"
    target.write_text("keep me")
    with pytest.raises(FileExistsError):
        flight_client.download_table(target, file_id=table.file_id, omero_connector=conn)
    assert target.read_text() == "keep me"


class FlakyServer(flight.FlightServerBase):
    """Answers ``health`` only after failing ``failures`` times with the given error code."""

    def __init__(self, code: str, failures: int) -> None:
        super().__init__("grpc://127.0.0.1:0")
        self.code, self.failures, self.calls = code, failures, 0

    def do_action(self, context, action):
        self.calls += 1
        if self.calls <= self.failures:
            extra = json.dumps({"code": self.code, "message": f"{self.code} #{self.calls}"})
            cls = {"unavailable": flight.FlightUnavailableError,
                   "permission_denied": flight.FlightUnauthorizedError}.get(
                       self.code, flight.FlightInternalError)
            raise cls(f"{self.code} #{self.calls}", extra_info=extra.encode())
        return iter([encode_body(status="ok")])


@pytest.fixture
def flaky():
    servers = []

    def start(code: str, failures: int) -> FlakyServer:
        server = FlakyServer(code, failures)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()


def test_busy_server_is_retried(flaky):
    server = flaky("unavailable", 2)
    transport = Transport(f"grpc://127.0.0.1:{server.port}", retries=3, backoff=0.01)
    assert transport.action("health") == {"v": 1, "status": "ok"}
    assert server.calls == 3
    transport.close()


def test_busy_server_gives_up(flaky):
    server = flaky("unavailable", 10)
    transport = Transport(f"grpc://127.0.0.1:{server.port}", retries=2, backoff=0.01)
    with pytest.raises(flight_client.ServerBusy, match="unavailable #3"):
        transport.action("health")
    assert server.calls == 3
    transport.close()


def test_server_error_is_not_retried(flaky):
    server = flaky("internal", 1)
    transport = Transport(f"grpc://127.0.0.1:{server.port}", retries=3, backoff=0.01)
    with pytest.raises(flight_client.ServerError, match="internal #1") as info:
        transport.action("health")
    assert info.value.code == "internal" and server.calls == 1
    transport.close()
