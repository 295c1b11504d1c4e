"""The same client-level tests against both backends.

``site`` is parametrized over ``"embedded"`` (a bridge over a LocalStore) and
``"omero"`` (a bridge over the OMERO backend, talking to the OMERO stand-in
over real Ice). Each site has three users by role: ``owner`` and ``peer``
share a read-only group, ``outsider`` is alone in a private group; ``targets``
holds one object of every linkable kind, owned by ``owner`` in the shared
group. The OMERO site is skipped, with the reason, when omero-py is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import flight_client
from flight_server.service import FlightService
from tests.conftest import start_bridge
from tests.standin.fixtures import omero_standin  # noqa: F401 - session fixture, used below

LINK_KINDS = ("Image", "Dataset", "Project", "Plate", "Screen", "Well", "Roi")


@dataclass
class Site:
    """A running bridge over one backend, with users, link targets and file seeding."""

    kind: str
    host: str
    port: int
    users: dict[str, tuple[str, str]]  # role -> (user name, password)
    targets: dict[str, int]
    outsider_image: int  # an Image of the outsider's, in their private group
    add_file: Callable[[str, bytes, str, str, list[tuple[str, int]]], tuple[int, int]]
    #: The table handles open now, as the backend's side sees them (the embedded store's
    #: registry, the stand-in's OMERO.tables).
    open_tables: Callable[[], list[Any]]
    server: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def connect(self, role: str = "owner") -> flight_client.Connection:
        username, password = self.users[role]
        return flight_client.connect_to_omero(server=self.host, port=self.port,
                                              username=username, password=password,
                                              interactive=False, keep_alive=False)


def _embedded(tmp: Path) -> Iterator[Site]:
    bridge = start_bridge(tmp / "store")
    store = bridge.store

    def add_file(role_user: str, data: bytes, name: str, mimetype: str,
                 links: list[tuple[str, int]]) -> tuple[int, int]:
        info = store.add_file(role_user, data, name, mimetype, links)
        return int(info.annotation_id), info.file_id

    users = {role: (name, bridge.passwords[name])
             for role, name in (("owner", "alice"), ("peer", "bob"), ("outsider", "carol"))}
    targets = {kind: 10 + i for i, kind in enumerate(LINK_KINDS)}
    yield Site("embedded", bridge.host, bridge.port, users, targets, 99, add_file,
               open_tables=store.open_tables, server=bridge.server)
    bridge.server.shutdown()


def _omero(standin: Any) -> Iterator[Site]:
    from flight_server.backends.omero import OmeroBackend

    seed = standin.seed
    shared, private = "conformance-lab", "conformance-secret"
    seed.group(shared, "rwr---")
    seed.group(private, "rw----")
    names = {"owner": "cf-alice", "peer": "cf-bob", "outsider": "cf-carol"}
    seed.user(names["owner"], "cf-alice-pw", [shared])
    seed.user(names["peer"], "cf-bob-pw", [shared])
    seed.user(names["outsider"], "cf-carol-pw", [private])
    owner = names["owner"]
    image = seed.image(owner, shared, "conformance image")
    plate = seed.plate(owner, shared, "conformance plate")
    targets = {
        "Image": image, "Dataset": seed.dataset(owner, shared),
        "Project": seed.project(owner, shared), "Plate": plate,
        "Screen": seed.screen(owner, shared), "Well": seed.well(owner, shared, plate),
        "Roi": seed.roi(owner, shared, image),
    }
    users = {role: (name, seed.passwords[name]) for role, name in names.items()}
    groups = {names["owner"]: shared, names["peer"]: shared, names["outsider"]: private}

    def add_file(user: str, data: bytes, name: str, mimetype: str,
                 links: list[tuple[str, int]]) -> tuple[int, int]:
        seeded = seed.file(user, groups[user], data, name, mimetype, links)
        return seeded.annotation_id, seeded.file_id

    backend = OmeroBackend(standin.host, standin.port)
    server = FlightService(backend, "grpc://127.0.0.1:0")
    outsider_image = seed.image(names["outsider"], private, "outsider image")
    yield Site("omero", "127.0.0.1", server.port, users, targets, outsider_image, add_file,
               open_tables=standin.open_tables, server=server,
               extra={"backend": backend, "standin": standin, "groups": groups})
    server.shutdown()
    backend.close()


@pytest.fixture(scope="session",
                params=["embedded", pytest.param("omero", marks=pytest.mark.omero)])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Site]:
    if request.param == "embedded":
        yield from _embedded(tmp_path_factory.mktemp("conformance-embedded"))
    else:
        yield from _omero(request.getfixturevalue("omero_standin"))


@pytest.fixture(scope="session")
def owner(site: Site) -> Iterator[flight_client.Connection]:
    with site.connect("owner") as conn:
        yield conn


@pytest.fixture(scope="session")
def peer(site: Site) -> Iterator[flight_client.Connection]:
    with site.connect("peer") as conn:
        yield conn


@pytest.fixture(scope="session")
def outsider(site: Site) -> Iterator[flight_client.Connection]:
    with site.connect("outsider") as conn:
        yield conn
