"""Sessions, errors and bookkeeping of the stand-in, seen from real omero-py clients."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pandas as pd
import pytest

from tests.standin.fixtures import SKIP_REASON  # noqa: E402

omero = pytest.importorskip("omero", reason=SKIP_REASON)
import Glacier2  # noqa: E402 - installed with omero-py's zeroc-ice
import Ice  # noqa: E402

from flight_server.repository import original_file_path  # noqa: E402
from tests.standin.fixtures import start_standin  # noqa: E402

pytestmark = pytest.mark.omero
ALL_GROUPS = {"omero.group": "-1"}


@pytest.fixture(scope="module")
def table(omero_standin, omero_world):
    frame = pd.DataFrame({"id": np.arange(1000, dtype=np.int64)})
    return omero_standin.seed.table("alice", omero_world.shared_group, frame, "session table",
                                    links=[("Image", omero_world.images["shared-lab"])])


def _open(client, file_id):
    return client.sf.sharedResources().openTable(omero.model.OriginalFileI(file_id, False),
                                                 ALL_GROUPS)


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_wrong_password_is_refused(omero_standin, omero_world):
    client = omero.client(omero_standin.host, omero_standin.port)
    try:
        with pytest.raises(Glacier2.PermissionDeniedException):
            client.createSession("alice", "not-her-password")
    finally:
        client.closeSession()


def test_tcp_endpoint(omero_login, omero_world):
    client = omero_login("alice", secure=False)
    assert client.sf.getAdminService().getEventContext().userName == "alice"


def test_join_by_session_key_and_close(omero_standin, omero_world):
    first = omero_standin.login("alice")
    key = first.getSessionId()
    second = omero.client(omero_standin.host, omero_standin.port)
    try:
        second.joinSession(key)
        context = second.sf.getAdminService().getEventContext()
        assert (context.userName, context.sessionUuid) == ("alice", key)
        second.closeSession()  # one of two references: the session stays open
        assert first.sf.getAdminService().getEventContext().sessionUuid == key
        first.killSession()
        third = omero.client(omero_standin.host, omero_standin.port)
        try:
            with pytest.raises(Glacier2.PermissionDeniedException, match="closed"):
                third.joinSession(key)
        finally:
            third.closeSession()
    finally:
        second.closeSession()
        first.closeSession()


def test_security_context_switch(omero_login, omero_world):
    client = omero_login("alice")
    admin = client.sf.getAdminService()
    shared = admin.lookupGroup(omero_world.shared_group)
    client.sf.setSecurityContext(omero.model.ExperimenterGroupI(shared.id.val, False))
    assert admin.getEventContext().groupName == omero_world.shared_group
    image = omero_world.images[omero_world.shared_group]
    assert client.sf.getQueryService().find("Image", image) is not None


def test_unsupported_hql_and_operations_fail_clearly(omero_login, omero_world):
    client = omero_login("alice")
    query = client.sf.getQueryService()
    with pytest.raises(omero.ApiUsageException, match="does not support this HQL"):
        query.findAllByQuery("select i from Image i, Dataset d where i.id = d.id", None)
    started = time.monotonic()
    with pytest.raises(omero.ApiUsageException, match="does not implement IQuery.findByString"):
        query.findByString("Image", "name", "x")
    with pytest.raises(omero.ApiUsageException, match="does not implement ServiceFactory"):
        client.sf.getRoiService()
    assert time.monotonic() - started < 5


def test_projection_lists_linked_tables(omero_login, omero_world, table):
    client = omero_login("bob")
    params = omero.sys.ParametersI().addId(omero_world.images[omero_world.shared_group])
    params.add("mt", omero.rtypes.rstring("OMERO.tables"))
    rows = client.sf.getQueryService().projection(
        "select l.child.id, f.id, f.name from ImageAnnotationLink l "
        "join l.child ann join ann.file f "
        "where l.parent.id = :id and f.mimetype = :mt order by f.id", params, ALL_GROUPS)
    assert [table.annotation_id, table.file_id, "session table"] in [
        [cell.val for cell in row] for row in rows]


def test_files_live_in_the_binary_repository(omero_standin, table):
    path = original_file_path(omero_standin.data_dir, table.file_id)
    assert path.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"


def test_open_tables_are_reported_and_closed_with_the_session(omero_standin, omero_world,
                                                              table):
    client = omero_standin.login("bob")
    session = client.getSessionId()
    opened = _open(client, table.file_id)
    mine = [t for t in omero_standin.open_tables() if t["session"] == session]
    assert [(t["file_id"], t["user"]) for t in mine] == [(table.file_id, "bob")]
    opened.close()
    assert not [t for t in omero_standin.open_tables() if t["session"] == session]
    _open(client, table.file_id)  # left open on purpose
    client.closeSession()
    assert not [t for t in omero_standin.open_tables() if t["session"] == session]


def test_client_process_dying_closes_its_tables(omero_standin, omero_world, table):
    script = textwrap.dedent(f"""
        import os, omero
        c = omero.client("127.0.0.1", {omero_standin.port})
        c.createSession("bob", "bob-password")
        t = c.sf.sharedResources().openTable(omero.model.OriginalFileI({table.file_id}, False),
                                             {{"omero.group": "-1"}})
        t.read([0], 0, 500)
        print(c.getSessionId(), flush=True)
        os._exit(0)  # no closeSession: the connection just drops
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    session = done.stdout.strip()
    omero_standin.wait_for_open_tables(
        lambda tables: not [t for t in tables if t["session"] == session])


def test_concurrent_reads(omero_login, omero_world, table):
    client = omero_login("alice")
    errors: list[BaseException] = []

    def reader(start: int) -> None:
        try:
            opened = _open(client, table.file_id)
            try:
                for _ in range(5):
                    data = opened.read([0], start, start + 100)
                    assert data.columns[0].values == list(range(start, start + 100))
            finally:
                opened.close()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i * 100,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []


def test_idle_sessions_expire(tmp_path):
    with start_standin(tmp_path / "short", session_timeout=1.0) as standin:
        standin.seed.group("g", "rw----")
        standin.seed.user("carol", "carol-password", ["g"])
        frame = pd.DataFrame({"x": [1, 2, 3]})
        seeded = standin.seed.table("carol", "g", frame, "t",
                                    links=[("Image", standin.seed.image("carol", "g"))])
        client = standin.login("carol")
        key = client.getSessionId()
        _open(client, seeded.file_id)
        assert len(standin.open_tables()) == 1
        assert _wait_for(lambda: standin.open_tables() == [], timeout=10)
        # Gone either way: the session's servants removed, or the session marked closed first.
        with pytest.raises((Ice.ObjectNotExistException, omero.RemovedSessionException)):
            client.sf.getAdminService()
        rejoin = omero.client(standin.host, standin.port)
        try:
            with pytest.raises(Glacier2.PermissionDeniedException):
                rejoin.joinSession(key)
        finally:
            rejoin.closeSession()
        client.closeSession()

