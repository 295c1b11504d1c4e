"""The ``omero_plus`` fixture: a running HTTPS stand-in (import it into a test module)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.omero_plus.server import OmeroPlus, start

#: Session keys the stand-in accepts, and whose they are.
SESSIONS = {"alice-session-key": "alice", "bob-session-key": "bob"}
#: How the server sees the shared storage: /network_data/... is <tmp>/shared/...
SERVER_ROOT = "/network_data"


@pytest.fixture(scope="module")
def omero_plus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OmeroPlus]:
    """OMERO Plus's registration endpoints under prefix ``/omero``, on 127.0.0.1 over HTTPS."""
    pytest.importorskip("tiledb")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("omero_plus")
    shared = folder / "shared"
    shared.mkdir()
    plus = start(folder, prefix="/omero", sessions=dict(SESSIONS),
                 path_map={SERVER_ROOT: shared})
    yield plus
    plus.stop()
