"""Session fixtures shared by all test folders: a running bridge over an embedded store.

``bridge``: a server with authentication on 127.0.0.1:<free port> over a
``LocalStore`` in a temporary folder. Users: group ``lab`` (read-only) with
``alice`` and ``bob``; group ``secret`` (private) with ``carol`` and ``dave``;
admin ``root``. ``connect(username)`` returns an authenticated
``(FlightClient, FlightCallOptions)`` pair.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.flight as flight
import pytest

from flight_server.backends.local import LocalStore
from flight_server.service import FlightService

PASSWORDS = {
    "root": "root-pw-1",
    "alice": "alice-pw-1",
    "bob": "bob-pw-1",
    "carol": "carol-pw-1",
    "dave": "dave-pw-1",
}


@dataclass
class Bridge:
    url: str
    host: str
    port: int
    store: LocalStore
    store_path: Path
    passwords: dict[str, str] = field(default_factory=dict)
    server: FlightService | None = field(default=None, repr=False)


def seed_store(path: Path) -> LocalStore:
    """A store with the standard test users and groups."""
    store = LocalStore(path)
    store.add_group("lab", "read-only")
    store.add_group("secret", "private")
    store.add_user("root", PASSWORDS["root"], admin=True)
    for name in ("alice", "bob"):
        store.add_user(name, PASSWORDS[name], ["lab"])
    for name in ("carol", "dave"):
        store.add_user(name, PASSWORDS[name], ["secret"])
    return store


def start_bridge(path: Path, **options: object) -> Bridge:
    """Seed a store in ``path`` and serve it on a free loopback port (stop with ``.server``)."""
    store = seed_store(path)
    server = FlightService(store, "grpc://127.0.0.1:0", **options)  # type: ignore[arg-type]
    return Bridge(server.url, "127.0.0.1", server.port, store, store.path, dict(PASSWORDS),
                  server)


Connection = tuple[flight.FlightClient, flight.FlightCallOptions]


def connect_to(bridge: Bridge, username: str) -> Connection:
    client = flight.FlightClient(bridge.url)
    header = client.authenticate_basic_token(username, bridge.passwords[username])
    return client, flight.FlightCallOptions(headers=[header], timeout=60)


@pytest.fixture(scope="session")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    b = start_bridge(tmp_path_factory.mktemp("bridge") / "store")
    yield b
    assert b.server is not None
    b.server.shutdown()
    b.store.close()


@pytest.fixture(scope="session")
def connect(bridge: Bridge) -> Callable[[str], Connection]:
    return lambda username: connect_to(bridge, username)
