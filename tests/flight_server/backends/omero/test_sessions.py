"""Sign-in through the bridge: each token reaches only its own user's OMERO session."""

from __future__ import annotations

import time

import pyarrow.flight as flight
import pytest

pytest.importorskip("omero", reason="omero-py (with zeroc-ice 3.6) is not installed")

import flight_protocol.messages  # noqa: E402
from flight_server.auth import TokenSigner  # noqa: E402
from flight_server.service import ACTION_LOGOUT  # noqa: E402

pytestmark = pytest.mark.omero


def raw_client(bridge, user: str, password: str | None = None):
    client = flight.FlightClient(f"grpc://{bridge.host}:{bridge.port}")
    header = client.authenticate_basic_token(user, password or bridge.password(user))
    return client, header


def whoami(client, header) -> str:
    options = flight.FlightCallOptions(headers=[header])
    result = next(iter(client.do_action(flight.Action("whoami", b"{}"), options)))
    return flight_protocol.messages.decode_body(result.body.to_pybytes())["username"]


def test_each_token_names_its_own_session(omero_bridge):
    alice, alice_header = raw_client(omero_bridge, "alice")
    bob, bob_header = raw_client(omero_bridge, "bob")
    assert whoami(alice, alice_header) == "alice"
    assert whoami(bob, bob_header) == "bob"
    # A token is bound to a session, not a connection: bob's token on alice's client is bob.
    assert whoami(alice, bob_header) == "bob"
    sessions = {s.handle: s.username for s in omero_bridge.backend.sessions.active()}
    for header, user in ((alice_header, "alice"), (bob_header, "bob")):
        subject = omero_bridge.server.signer.verify(header[1].decode().split(" ", 1)[1])
        assert sessions[subject] == user
    # Tokens naming a user (as the embedded store's do) or signed elsewhere are refused.
    for forged in (omero_bridge.server.signer.issue("bob"),
                   TokenSigner(b"another-secret-0123456789").issue(
                       next(iter(sessions)))):
        with pytest.raises(flight.FlightUnauthenticatedError, match="sign in again"):
            whoami(alice, (b"authorization", f"Bearer {forged}".encode()))


def test_wrong_password_is_unauthenticated(omero_bridge):
    with pytest.raises(flight.FlightUnauthenticatedError, match="OMERO refused"):
        raw_client(omero_bridge, "alice", "not-her-password")


def call(client, header, action: str = "whoami") -> dict:
    options = flight.FlightCallOptions(headers=[header])
    body = flight_protocol.messages.encode_body()
    result = next(iter(client.do_action(flight.Action(action, body), options)))
    return flight_protocol.messages.decode_body(result.body.to_pybytes())


def test_session_key_joins_and_logout_only_detaches(omero_bridge, omero_login, sign_in):
    own = omero_login("alice")
    conn = sign_in("alice", session_key=own.getSessionId())  # the client's session_key path
    assert conn.whoami()["username"] == "alice"
    client, header = raw_client(omero_bridge, "__session__", own.getSessionId())
    assert call(client, header)["username"] == "alice"
    call(client, header, ACTION_LOGOUT)
    with pytest.raises(flight.FlightUnauthenticatedError, match="sign in again"):
        call(client, header)
    assert own.sf.keepAlive(None)  # the user's own session lives on
    assert conn.whoami()["username"] == "alice"  # and so does the other sign-in on it


def test_closed_omero_session_is_a_clear_unauthenticated_error(omero_bridge, omero_login):
    own = omero_login("bob")
    key = own.getSessionId()
    client, header = raw_client(omero_bridge, "__session__", key)
    assert call(client, header)["username"] == "bob"
    own.killSession()
    for _ in range(2):  # the bridge notices, forgets the sign-in, and keeps saying so
        with pytest.raises(flight.FlightUnauthenticatedError, match="sign in again"):
            call(client, header, "list_tables")
    with pytest.raises(flight.FlightUnauthenticatedError, match="has been closed|expired"):
        raw_client(omero_bridge, "__session__", key)


def test_password_logout_closes_the_omero_session(omero_bridge):
    import Glacier2
    import omero

    client, header = raw_client(omero_bridge, "alice")
    handle = omero_bridge.server.signer.verify(header[1].decode().split(" ", 1)[1])
    key = omero_bridge.backend.sessions.get(handle).client.getSessionId()
    call(client, header, ACTION_LOGOUT)
    with pytest.raises(flight.FlightUnauthenticatedError, match="sign in again"):
        call(client, header)
    joiner = omero.client(omero_bridge.standin.host, omero_bridge.standin.port)
    try:
        with pytest.raises(Glacier2.PermissionDeniedException, match="closed"):
            joiner.joinSession(key)  # the OMERO session is gone
    finally:
        joiner.closeSession()


def test_idle_sessions_are_closed(omero_standin, omero_world):
    from flight_server.backends.omero import OmeroBackend

    backend = OmeroBackend(omero_standin.host, omero_standin.port, idle_timeout=30)
    try:
        caller = backend.authenticate("alice", "alice-password")
        session = caller.session
        backend.sessions.sweep()  # in use: kept alive
        assert backend.lookup_caller(session.handle).username == "alice"
        backend.sessions.sweep(now=time.monotonic() + 31)
        assert session.closed
        with pytest.raises(Exception, match="sign in again"):
            backend.lookup_caller(session.handle)
    finally:
        backend.close()


def test_client_shutdown_logs_out_and_frees_the_omero_session(omero_bridge, sign_in):
    import Glacier2
    import omero

    conn = sign_in("alice")
    conn.whoami()
    token = conn.transport._header[1].decode().split(" ", 1)[1]
    key = omero_bridge.backend.sessions.get(omero_bridge.server.signer.verify(token)) \
        .client.getSessionId()
    conn.shutdown()
    joiner = omero.client(omero_bridge.standin.host, omero_bridge.standin.port)
    try:
        with pytest.raises(Glacier2.PermissionDeniedException, match="closed"):
            joiner.joinSession(key)
    finally:
        joiner.closeSession()
