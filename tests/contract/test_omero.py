"""The backend contract on the OMERO backend, over real Ice against the OMERO stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from flight_server.backends.base import Backend, Caller
from tests.contract.contract import BackendContract
from tests.standin.fixtures import omero_standin, omero_world  # noqa: F401 - fixtures


@pytest.mark.omero
class TestOmeroBackend(BackendContract):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, omero_standin: Any) -> Iterator[Backend]:  # noqa: F811
        from flight_server.backends.omero import OmeroBackend

        backend = OmeroBackend(omero_standin.host, omero_standin.port)
        yield backend
        backend.close()

    @pytest.fixture(scope="class")
    @classmethod
    def caller(cls, backend: Backend, omero_standin: Any) -> Iterator[Caller]:  # noqa: F811
        caller = backend.authenticate("alice", omero_standin.passwords["alice"])
        yield caller
        backend.logout(caller)

    @pytest.fixture(scope="class")
    @classmethod
    def other(cls, backend: Backend, omero_standin: Any) -> Iterator[Caller]:  # noqa: F811
        caller = backend.authenticate("bob", omero_standin.passwords["bob"])
        yield caller
        backend.logout(caller)

    @pytest.fixture(scope="class")
    @classmethod
    def link(cls, omero_world: Any) -> tuple[str, int]:  # noqa: F811
        return ("Image", omero_world.images[omero_world.shared_group])

    @pytest.fixture(autouse=True)
    def _standin(self, omero_standin: Any) -> None:  # noqa: F811
        self._status = omero_standin

    def open_table_ids(self, backend: Backend) -> list[int]:
        """Tables open on the stand-in's OMERO.tables, whoever opened them."""
        return [t["file_id"] for t in self._status.open_tables()]

    def test_the_session_key_is_the_callers_own(self, backend, caller):
        import omero

        key = backend.omero_session_key(caller)
        client = omero.client(self._status.host, self._status.port)
        try:
            context = client.joinSession(key).getAdminService().getEventContext()
            assert (context.userName, context.sessionUuid) == ("alice", key)
        finally:
            client.closeSession()  # one of two references: the caller's session stays
        assert backend.list_tables(caller) is not None  # and still serves the caller
