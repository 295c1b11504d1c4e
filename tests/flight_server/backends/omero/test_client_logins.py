"""The client's non-password sign-ins end to end: a real omero-user-token and a real omero-py
client, each handing its OMERO session to the bridge (OMERO backend over the stand-in)."""

from __future__ import annotations

import pytest

import flight_client

pytestmark = pytest.mark.omero


@pytest.fixture
def bridge_env(omero_bridge, monkeypatch):
    monkeypatch.setenv("OMERO_FLIGHT_URL", f"grpc://127.0.0.1:{omero_bridge.port}")
    for name in ("OMERO_FLIGHT_USER", "OMERO_FLIGHT_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return omero_bridge


def test_omero_user_token_signs_in(bridge_env, monkeypatch, tmp_path):
    import omero_user_token

    monkeypatch.setenv("OMERO_USER_TOKEN_DIR", str(tmp_path))
    standin = bridge_env.standin
    token = omero_user_token.setter(standin.host, standin.port, "alice",
                                    bridge_env.password("alice"), 600_000)
    assert token.endswith(f"@{standin.host}:{standin.port}")
    with flight_client.connect_to_omero(interactive=False, keep_alive=False) as conn:
        assert conn.whoami()["username"] == "alice"
        tables = flight_client.list_tables(omero_connector=conn)
    assert isinstance(tables, list)


def test_omero_py_client_session_is_reused(bridge_env, omero_login):
    client = omero_login("bob")
    with flight_client.connect_to_omero(client=client, interactive=False,
                                        keep_alive=False) as conn:
        assert conn.whoami()["username"] == "bob"
    client.getSession().getAdminService().getEventContext()  # bob's own session still works
