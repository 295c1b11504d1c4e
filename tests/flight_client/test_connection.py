"""Every supported way of giving connection details, and the connection's lifetime."""

from __future__ import annotations

import gc
import logging
import socket
import time

import pytest

import flight_client
from flight_client.connection import Connection
from flight_client.details import (
    DEFAULT_PORT,
    ENV_HOST,
    ENV_PASSWORD,
    ENV_PORT,
    ENV_URL,
    ENV_USER,
    SESSION_USER,
    parse_server,
    resolve_details,
)


def test_connection_object(table, conn):
    assert conn.connected
    assert conn.whoami()["username"] == "alice"
    assert flight_client.get_table_size(file_id=table.file_id, omero_connector=conn) == (300, 5)


def test_arguments_host_and_port(table, bridge):
    size = flight_client.get_table_size(file_id=table.file_id, server=bridge.host,
                                        port=bridge.port, username="bob",
                                        password=bridge.passwords["bob"])
    assert size == (300, 5)  # bob shares alice's read-only group


def test_arguments_url(table, bridge):
    cols = flight_client.get_table_columns(file_id=table.file_id, server=bridge.url,
                                           username="alice",
                                           password=bridge.passwords["alice"])
    assert cols[0] == "id"


def test_environment_url(table, bridge, monkeypatch):
    monkeypatch.setenv(ENV_URL, bridge.url)
    monkeypatch.setenv(ENV_USER, "alice")
    monkeypatch.setenv(ENV_PASSWORD, bridge.passwords["alice"])
    df = flight_client.read_table(file_id=table.file_id, rows=[3, 1])
    assert list(df.index) == [3, 1]


def test_environment_host_and_port(table, bridge, monkeypatch):
    monkeypatch.setenv(ENV_HOST, bridge.host)
    monkeypatch.setenv(ENV_PORT, str(bridge.port))
    monkeypatch.setenv(ENV_USER, "alice")
    monkeypatch.setenv(ENV_PASSWORD, bridge.passwords["alice"])
    with flight_client.connect_to_omero(interactive=False) as c:
        assert c.whoami()["username"] == "alice"


def test_arguments_win_over_environment(bridge, monkeypatch):
    monkeypatch.setenv(ENV_URL, "grpc://nowhere.invalid:1")
    monkeypatch.setenv(ENV_USER, "bob")
    monkeypatch.setenv(ENV_PASSWORD, "wrong")
    with flight_client.connect_to_omero(server=bridge.url, username="alice",
                                        password=bridge.passwords["alice"]) as c:
        assert c.whoami()["username"] == "alice"


def test_missing_details_without_prompt():
    with pytest.raises(flight_client.MissingConnectionDetails) as info:
        flight_client.connect_to_omero(interactive=False, allow_token=False)
    message = str(info.value)
    assert "bridge address" in message and "username" in message and "password" in message


def test_terminal_prompt(bridge, monkeypatch):
    answers = iter([bridge.url, "alice"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    monkeypatch.setattr("getpass.getpass", lambda prompt="": bridge.passwords["alice"])
    with flight_client.connect_to_omero(allow_token=False) as c:
        assert c.whoami()["username"] == "alice"


def test_closed_connection_is_refused(bridge, alice, table):
    c = flight_client.connect_to_omero(**alice, interactive=False)
    c.shutdown()
    c.shutdown()  # twice is fine
    assert c.closed and not c.connected
    with pytest.raises(flight_client.ConnectionClosed):
        flight_client.read_table(file_id=table.file_id, omero_connector=c)
    with pytest.raises(flight_client.ConnectionClosed):
        c.whoami()
    with pytest.raises(flight_client.ConnectionClosed):
        c.connect()


def test_context_manager_closes(alice):
    with flight_client.connect_to_omero(**alice) as c:
        transport = c.transport
    assert c.closed and transport.closed


def test_garbage_collection_closes(alice):
    c = flight_client.connect_to_omero(**alice)
    transport = c.transport
    del c
    gc.collect()
    assert transport.closed


def test_omero_client_session_is_reused(bridge, monkeypatch):
    """An omero-py client's session key goes to the bridge as user __session__."""

    class FakeOmeroClient:  # only the two methods the client calls
        def getSessionId(self):  # noqa: N802
            return "abc-123"

        def getProperty(self, name):  # noqa: N802
            return "omero.example.org"

    monkeypatch.setenv(ENV_URL, bridge.url)
    details = resolve_details(client=FakeOmeroClient())
    assert (details.username, details.password) == (SESSION_USER, "abc-123")
    assert details.host == bridge.host  # the bridge from the environment, not OMERO's host
    # The local store has no OMERO behind it, so the bridge refuses the session.
    with pytest.raises(flight_client.AuthenticationFailed):
        flight_client.get_table_size(file_id=1, omero_connector=FakeOmeroClient())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bridge", ("bridge", None, None)),
        ("bridge:9000", ("bridge", 9000, None)),
        ("grpc://bridge:9000", ("bridge", 9000, False)),
        ("grpc+tls://bridge", ("bridge", None, True)),
    ],
)
def test_parse_server(text, expected):
    assert parse_server(text) == expected


def test_bad_server_values():
    with pytest.raises(flight_client.InvalidRequest, match="scheme"):
        parse_server("http://bridge:8815")
    with pytest.raises(ValueError, match="port"):
        resolve_details(server="bridge", port="eighty", allow_token=False, environ={})


def test_defaults_and_ice_port_warning(caplog):
    assert resolve_details(server="bridge", allow_token=False, environ={}).port == DEFAULT_PORT
    with caplog.at_level(logging.WARNING):
        resolve_details(server="bridge", port=4064, allow_token=False, environ={})
    assert "Ice port" in caplog.text


def test_unreachable_bridge_is_connection_failed():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    c = Connection("127.0.0.1", port, "alice", "pw")
    c.retries = 1
    with pytest.raises(flight_client.ConnectionFailed, match="cannot reach"):
        c.connect(interactive=False)


def test_omero_user_token(bridge, monkeypatch):
    """A token ``key@omero-host:4064`` logs in to the bridge named by the environment."""
    import types

    token_module = types.ModuleType("omero_user_token")
    token_module.get_token = lambda: "session-key-1@omero.example.org:4064"
    monkeypatch.setitem(__import__("sys").modules, "omero_user_token", token_module)
    monkeypatch.setenv(ENV_URL, bridge.url)
    details = resolve_details()
    assert (details.username, details.password) == (SESSION_USER, "session-key-1")
    assert details.url == bridge.url
    # The embedded store has no OMERO sessions: the bridge refuses the key.
    with pytest.raises(flight_client.AuthenticationFailed):
        flight_client.connect_to_omero(interactive=False)
    assert resolve_details(allow_token=False).username is None


def test_environment_password_with_argument_user():
    env = {ENV_URL: "grpc://bridge:9999", ENV_PASSWORD: "pw"}
    assert resolve_details(username="alice", allow_token=False, environ=env).password == "pw"
    env[ENV_USER] = "bob"  # bob's password is not alice's
    assert resolve_details(username="alice", allow_token=False, environ=env).password is None
    assert resolve_details(allow_token=False, environ=env).url == "grpc://bridge:9999"


def test_expired_token_logs_in_again(tmp_path):
    from tests.conftest import start_bridge

    b = start_bridge(tmp_path / "store", token_lifetime=1)
    try:
        with flight_client.connect_to_omero(server=b.url, username="alice",
                                            password=b.passwords["alice"],
                                            keep_alive=False) as c:
            first = c.transport.options().headers
            time.sleep(2.1)
            assert c.whoami()["username"] == "alice"
            assert c.transport.options().headers != first  # a fresh token
    finally:
        b.server.shutdown()


def test_no_omero_gateway(conn):
    with pytest.raises(flight_client.NotSupported, match="BlitzGateway"):
        conn.get_gateway()


def test_prompt_without_answers(monkeypatch):
    def no_input(prompt=""):
        raise EOFError

    monkeypatch.setattr("builtins.input", no_input)
    with pytest.raises(flight_client.MissingConnectionDetails, match="bridge address"):
        flight_client.connect_to_omero(allow_token=False)
