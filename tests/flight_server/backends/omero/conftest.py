"""A bridge running the OMERO backend against the OMERO stand-in (real omero-py over Ice).

``omero_bridge``: the server and its backend, for the stand-in's ``omero_world``
users ``alice`` and ``bob`` (both in ``private-lab`` rw---- and ``shared-lab``
rwr---). ``sign_in(user)`` returns a flight_client connection, closed after
the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import flight_client
from tests.standin.fixtures import omero_login, omero_standin, omero_world  # noqa: F401


@dataclass
class OmeroBridge:
    host: str
    port: int
    backend: Any
    server: Any
    standin: Any
    world: Any

    def password(self, user: str) -> str:
        return self.standin.passwords[user]


@pytest.fixture(scope="session")
def omero_bridge(omero_standin, omero_world) -> Iterator[OmeroBridge]:  # noqa: F811
    from flight_server.backends.omero import OmeroBackend
    from flight_server.service import FlightService

    backend = OmeroBackend(omero_standin.host, omero_standin.port)
    server = FlightService(backend, "grpc://127.0.0.1:0")
    yield OmeroBridge("127.0.0.1", server.port, backend, server, omero_standin, omero_world)
    server.shutdown()
    backend.close()


@pytest.fixture
def sign_in(omero_bridge) -> Iterator[Any]:
    connections: list[Any] = []

    def connect(user: str, **details: Any) -> flight_client.Connection:
        if "session_key" not in details:
            details.update(username=user, password=omero_bridge.password(user))
        conn = flight_client.connect_to_omero(server=omero_bridge.host, port=omero_bridge.port,
                                              interactive=False, keep_alive=False,
                                              allow_token=False, **details)
        connections.append(conn)
        return conn

    yield connect
    for conn in connections:
        conn.shutdown()
