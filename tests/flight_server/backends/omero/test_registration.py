"""The register_table action on the OMERO backend: the bridge registers a TileDB array with
OMERO Plus using the caller's own OMERO session (real omero-py session on the stand-in, real
HTTPS registration stand-in)."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest

import flight_client
from flight_client import errors, remote
from tests.omero_plus.fixtures import SERVER_ROOT, omero_plus  # noqa: F401 - a fixture

pytestmark = pytest.mark.omero


@pytest.fixture
def web_bridge(omero_bridge, omero_plus, monkeypatch) -> Iterator[flight_client.Connection]:  # noqa: F811
    """alice, signed in with her password to a bridge that knows OMERO Plus's web address."""
    from flight_server.service import FlightService

    server = FlightService(omero_bridge.backend, "grpc://127.0.0.1:0",
                           omero_web_url=omero_plus.url)
    monkeypatch.delenv(remote.ENV_WEB_URL, raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(omero_plus.ca_file))  # the bridge trusts the CA
    conn = flight_client.connect_to_omero(server=server.url, username="alice",
                                          password=omero_bridge.password("alice"),
                                          interactive=False, keep_alive=False, allow_token=False)
    try:
        yield conn
    finally:
        conn.shutdown()
        server.shutdown()


def _omero_session_key(omero_bridge, conn: flight_client.Connection) -> str:
    token = conn.transport._header[1].decode().split(" ", 1)[1]
    handle = omero_bridge.server.signer.verify(token)
    return omero_bridge.backend.sessions.get(handle).client.getSessionId()


def test_bridge_registers_with_the_callers_own_session(omero_bridge, omero_plus, web_bridge):  # noqa: F811
    conn = web_bridge
    conn.whoami()
    key = _omero_session_key(omero_bridge, conn)
    omero_plus.sessions[key] = "alice"  # OMERO Plus knows alice's real OMERO session
    image = omero_bridge.world.images[omero_bridge.world.shared_group]
    local = omero_plus.path_map[SERVER_ROOT] / "via-bridge.tiledb"
    token = flight_client.create_tiledb(pd.DataFrame({"a": [1, 2, 3]}), local, progress=False)

    annotation_id = flight_client.register_table(conn, f"{SERVER_ROOT}/via-bridge.tiledb",
                                                 "via bridge", [("Image", image)], token,
                                                 "omero")
    done = omero_plus.registrations[-1]
    assert (done.annotation_id, done.user, done.uri) == (
        annotation_id, "alice", f"{SERVER_ROOT}/via-bridge.tiledb")

    with pytest.raises(errors.PermissionDenied, match="SecretToken does not match"):
        flight_client.register_table(conn, f"{SERVER_ROOT}/via-bridge.tiledb", "again",
                                     [("Image", image)], "not-the-token", "omero")
