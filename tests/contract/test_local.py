"""The backend contract on the embedded store (``backends.local``, a temporary folder)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from flight_server.backends.base import Caller
from flight_server.backends.local import LocalStore
from flight_server.errors import InvalidArgument
from tests.contract.contract import BackendContract


class TestLocalStore(BackendContract):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStore]:
        store = LocalStore(tmp_path_factory.mktemp("contract") / "store")
        store.add_group("lab", "read-only")
        store.add_group("elsewhere", "private")
        store.add_user("alice", "alice-password", ["lab"])
        store.add_user("carol", "carol-password", ["elsewhere"])
        yield store
        store.close()

    @pytest.fixture(scope="class")
    @classmethod
    def caller(cls, backend: LocalStore) -> Caller:
        return backend.lookup_caller("alice")

    @pytest.fixture(scope="class")
    @classmethod
    def other(cls, backend: LocalStore) -> Caller:
        return backend.lookup_caller("carol")

    @pytest.fixture(scope="class")
    @classmethod
    def link(cls) -> tuple[str, int]:
        return ("Image", 7)  # the embedded store has no Images: any id can be linked

    def open_table_ids(self, backend: LocalStore) -> list[int]:  # type: ignore[override]
        return [info.file_id for info in backend.open_tables()]

    def leftovers(self, backend: LocalStore) -> list[Any]:  # type: ignore[override]
        return sorted(backend.tmp.iterdir())

    def test_holds_no_omero_session(self, backend, caller):
        with pytest.raises(InvalidArgument, match="no OMERO session.*session_key="):
            backend.omero_session_key(caller)
