"""OMERO sessions and calls (issue 10, 2c): streams and uploads are never idle, every OMERO call
has a timeout and gives its slot back, a dead OMERO.tables is ``unavailable``, OMERO's own
text is bounded and never carries a session key.

Faults are the stand-in's own hook (``tests.standin.faults``): a Table operation made to hang
(a frozen OMERO.tables) or to fail as Glacier2 does when the service behind it died.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

pytest.importorskip("omero", reason="omero-py (with zeroc-ice 3.6) is not installed")

import flight_client  # noqa: E402
from flight_protocol.messages import (  # noqa: E402
    COMMIT_METADATA,
    FileTicket,
    FileUploadDescriptor,
    TableTicket,
    UploadDescriptor,
    encode_body,
)
from flight_server.errors import Unavailable  # noqa: E402
from flight_server.service import ACTION_LOGOUT  # noqa: E402
from tests.flight_server.wire import error_code  # noqa: E402
from tests.standin.faults import FAULTS_FILE  # noqa: E402

pytestmark = pytest.mark.omero

IDLE = 30.0
ROWS = 20_000


@contextlib.contextmanager
def fault(standin, **faults: dict[str, Any]) -> Iterator[None]:
    """Make the stand-in's Table operations hang or die until the block ends."""
    path = standin.data_dir / FAULTS_FILE
    path.write_text(json.dumps(faults))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def table_id(omero_bridge) -> int:
    world, seed = omero_bridge.world, omero_bridge.standin.seed
    import pandas as pd

    frame = pd.DataFrame({"id": np.arange(ROWS, dtype=np.int64),
                          "x": np.random.default_rng(3).normal(size=ROWS)})
    return seed.table("alice", world.shared_group, frame, "calls-and-idle").annotation_id


@pytest.fixture(scope="module")
def big_table_id(omero_bridge) -> int:
    """A table larger than what gRPC buffers, so a stream of it is really in progress."""
    world, seed = omero_bridge.world, omero_bridge.standin.seed
    import pandas as pd

    rows = 100_000
    frame = pd.DataFrame({"id": np.arange(rows, dtype=np.int64),
                          "label": [f"{i:06d}" + "w" * 394 for i in range(rows)]})
    return seed.table("alice", world.shared_group, frame, "big", chunk_rows=25_000).annotation_id


def wait_until(condition, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def make_bridge(omero_bridge) -> Iterator[Any]:
    """``make_bridge(**backend_options)`` -> (backend, port), over the session's stand-in."""
    from flight_server.backends.omero import OmeroBackend
    from flight_server.service import FlightService

    started: list[tuple[Any, Any]] = []

    def make(**options: Any) -> tuple[Any, int]:
        standin = omero_bridge.standin
        backend = OmeroBackend(standin.host, standin.port, **options)
        server = FlightService(backend, "grpc://127.0.0.1:0")
        started.append((backend, server))
        return backend, server.port

    yield make
    for backend, server in started:
        server.shutdown()
        backend.close()


def raw_client(port: int, user: str, password: str):
    client = flight.FlightClient(f"grpc://127.0.0.1:{port}")
    header = client.authenticate_basic_token(user, password)
    return client, flight.FlightCallOptions(headers=[header])


def only_session(backend, user: str):
    (session,) = [s for s in backend.sessions.active() if s.username == user]
    return session


# -- the idle timer and work in progress ------------------------------------------------------

@pytest.mark.parametrize("direct", [False, True], ids=["ice", "direct"])
def test_a_stream_in_progress_is_never_idle(omero_bridge, make_bridge, big_table_id, direct):
    options = {"data_dir": omero_bridge.standin.data_dir} if direct else {}
    backend, port = make_bridge(idle_timeout=IDLE, **options)
    client, call = raw_client(port, "alice", omero_bridge.password("alice"))
    reader = client.do_get(flight.Ticket(TableTicket(annotation_id=big_table_id,
                                                     chunk_size=1000).encode()), call)
    rows = reader.read_chunk().data.num_rows
    session = only_session(backend, "alice")
    assert session.in_use == 1
    backend.sessions.sweep(now=time.monotonic() + 10 * IDLE)  # long past the idle timeout
    assert not session.closed
    for chunk in reader:
        rows += chunk.data.num_rows
    assert rows == 100_000
    wait_until(lambda: session.in_use == 0)  # the stream ended: idle counts again
    backend.sessions.sweep(now=time.monotonic() + 10 * IDLE)
    assert session.closed
    client.close()


def test_a_lost_holder_does_not_keep_a_session_for_ever(omero_bridge, make_bridge, table_id):
    """A table handle nobody closes (a stream that never started) holds the session, but only
    up to HELD_IDLE_FACTOR idle timeouts without progress."""
    from flight_server.backends.base import TableRef
    from flight_server.backends.omero.sessions import HELD_IDLE_FACTOR

    backend, _ = make_bridge(idle_timeout=IDLE)
    caller = backend.authenticate("bob", omero_bridge.password("bob"))
    handle = backend.open_table(caller, TableRef(annotation_id=table_id))
    assert caller.session.in_use == 1
    backend.sessions.sweep(now=time.monotonic() + (HELD_IDLE_FACTOR - 1) * IDLE)
    assert not caller.session.closed
    backend.sessions.sweep(now=time.monotonic() + (HELD_IDLE_FACTOR + 1) * IDLE)
    assert caller.session.closed
    handle.close()  # closing after the session ended is quiet, and lets go of the hold
    assert caller.session.in_use == 0


def test_a_file_download_in_progress_is_never_idle(omero_bridge, make_bridge):
    world = omero_bridge.world
    data = bytes(range(256)) * (4096 * 32)  # 32 MiB, more than gRPC buffers
    seeded = omero_bridge.standin.seed.file("alice", world.shared_group, data, "blob.csv",
                                            "text/csv")
    backend, port = make_bridge(idle_timeout=IDLE)
    client, call = raw_client(port, "alice", omero_bridge.password("alice"))
    ticket = FileTicket(file_id=seeded.file_id, chunk_size=64 << 10)
    reader = client.do_get(flight.Ticket(ticket.encode()), call)
    got = [reader.read_chunk().data]
    session = only_session(backend, "alice")
    backend.sessions.sweep(now=time.monotonic() + 10 * IDLE)
    assert not session.closed and session.in_use == 1
    got.extend(chunk.data for chunk in reader)
    assert b"".join(v.as_py() for b in got for v in b.column(0)) == data
    wait_until(lambda: session.in_use == 0)
    client.close()


def test_an_upload_in_progress_is_never_idle(omero_bridge, make_bridge):
    world = omero_bridge.world
    backend, port = make_bridge(idle_timeout=IDLE)
    client, call = raw_client(port, "alice", omero_bridge.password("alice"))
    descriptor = UploadDescriptor(name="slow upload", explicit_commit=True,
                                  links=(("Image", world.images[world.shared_group]),))
    batch = pa.record_batch({"id": np.arange(1000, dtype=np.int64)})
    writer, answer = client.do_put(flight.FlightDescriptor.for_command(descriptor.encode()),
                                   batch.schema, call)
    writer.write_batch(batch)
    wait_until(lambda: [s for s in backend.sessions.active() if s.in_use])
    session = only_session(backend, "alice")
    backend.sessions.sweep(now=time.monotonic() + 10 * IDLE)
    assert not session.closed
    writer.write_batch(batch)
    writer.write_metadata(COMMIT_METADATA)
    writer.done_writing()
    result = json.loads(answer.read().to_pybytes())
    writer.close()
    assert result["rows"] == 2000
    wait_until(lambda: session.in_use == 0)
    client.close()


def test_a_file_upload_in_progress_is_never_idle(omero_bridge, make_bridge):
    backend, port = make_bridge(idle_timeout=IDLE)
    client, call = raw_client(port, "alice", omero_bridge.password("alice"))
    descriptor = FileUploadDescriptor(name="slow.csv", explicit_commit=True)
    batch = pa.record_batch({"data": pa.array([b"a,b\n1,2\n"], type=pa.binary())})
    writer, answer = client.do_put(flight.FlightDescriptor.for_command(descriptor.encode()),
                                   batch.schema, call)
    writer.write_batch(batch)
    wait_until(lambda: [s for s in backend.sessions.active() if s.in_use])
    session = only_session(backend, "alice")
    backend.sessions.sweep(now=time.monotonic() + 10 * IDLE)
    assert not session.closed
    writer.write_batch(batch)
    writer.write_metadata(COMMIT_METADATA)
    writer.done_writing()
    result = json.loads(answer.read().to_pybytes())
    writer.close()
    assert result["size"] == 16
    wait_until(lambda: session.in_use == 0)
    client.close()


# -- call timeouts and slots ------------------------------------------------------------------

def test_a_frozen_omero_call_times_out_and_frees_its_slot(omero_bridge, make_bridge, table_id):
    backend, port = make_bridge(max_calls=1, call_timeout=1.0)
    alice, alice_call = raw_client(port, "alice", omero_bridge.password("alice"))
    bob, bob_call = raw_client(port, "bob", omero_bridge.password("bob"))
    ticket = flight.Ticket(TableTicket(annotation_id=table_id).encode())
    with fault(omero_bridge.standin, read={"mode": "hang", "seconds": 5}):
        with pytest.raises(flight.FlightError) as info:
            alice.do_get(ticket, alice_call).read_all()
    assert error_code(info.value) == "unavailable"
    assert "did not answer in time" in str(info.value)
    # The one slot is free again: bob's read (and alice's) go through.
    assert bob.do_get(ticket, bob_call).read_all().num_rows == ROWS
    assert alice.do_get(ticket, alice_call).read_all().num_rows == ROWS
    alice.close()
    bob.close()


def test_a_client_that_goes_away_frees_its_slot_at_once(omero_bridge, make_bridge, table_id):
    """alice's read is frozen in OMERO; she signs out; bob's read gets the one slot long before
    the call timeout would have freed it (the gate's wait is shorter than the hang)."""
    backend, port = make_bridge(max_calls=1, call_timeout=60.0)
    backend.gate.wait = 8.0
    alice, alice_call = raw_client(port, "alice", omero_bridge.password("alice"))
    bob, bob_call = raw_client(port, "bob", omero_bridge.password("bob"))
    ticket = flight.Ticket(TableTicket(annotation_id=table_id).encode())
    outcome: list[BaseException] = []

    def frozen_read() -> None:
        try:
            alice.do_get(ticket, alice_call).read_all()
        except BaseException as exc:  # noqa: BLE001 - the test looks at it below
            outcome.append(exc)

    with fault(omero_bridge.standin, read={"mode": "hang", "seconds": 20}):
        thread = threading.Thread(target=frozen_read)
        thread.start()
        wait_until(lambda: [s for s in backend.sessions.active() if s.in_use])
        time.sleep(0.5)  # alice's Table.read is now in OMERO, holding the only slot
        list(alice.do_action(flight.Action(ACTION_LOGOUT, b"{}"), alice_call))
        thread.join(15)
    assert not thread.is_alive()
    assert outcome and error_code(outcome[0]) in ("unauthenticated", "unavailable")
    assert bob.do_get(ticket, bob_call).read_all().num_rows == ROWS
    alice.close()
    bob.close()


# -- a dead OMERO.tables ----------------------------------------------------------------------

def test_a_dead_tables_service_is_unavailable_and_the_sign_in_lives(omero_bridge, table_id):
    client, call = raw_client(omero_bridge.port, "bob", omero_bridge.password("bob"))
    ticket = flight.Ticket(TableTicket(annotation_id=table_id).encode())
    with fault(omero_bridge.standin, read={"mode": "die"}):
        with pytest.raises(flight.FlightError) as info:
            client.do_get(ticket, call).read_all()
    assert error_code(info.value) == "unavailable"
    assert "OMERO.tables" in str(info.value)
    assert client.do_get(ticket, call).read_all().num_rows == ROWS  # same token, still signed in
    client.close()


def test_a_table_gone_from_omero_tables_is_unavailable_not_signed_out(omero_bridge, table_id):
    from flight_server.backends.base import TableRef

    backend = omero_bridge.backend
    caller = backend.authenticate("bob", omero_bridge.password("bob"))
    try:
        handle = backend.open_table(caller, TableRef(annotation_id=table_id))
        handle._table.close()  # OMERO.tables forgets the table (as after a restart)
        with pytest.raises(Unavailable, match="no longer has this object"):
            handle.read_range(["id"], 0, 10)
        handle.close()
        assert not caller.session.closed  # the session itself is fine
        assert backend.lookup_caller(caller.session.handle).username == "bob"
    finally:
        backend.logout(caller)


def test_an_omero_that_died_is_unavailable(tmp_path, omero_world):
    """A whole OMERO server killed under a signed-in user: its calls and new sign-ins are
    ``unavailable`` (never ``internal``)."""
    import os
    import signal

    from flight_server.backends.omero import OmeroBackend
    from flight_server.service import FlightService
    from tests.standin.fixtures import start_standin

    with start_standin(tmp_path / "doomed") as standin:
        standin.seed.group("doomed-lab", "rw----")
        standin.seed.user("dora", "dora-password", ["doomed-lab"])
        backend = OmeroBackend(standin.host, standin.port, call_timeout=10.0)
        server = FlightService(backend, "grpc://127.0.0.1:0")
        try:
            client, call = raw_client(server.port, "dora", "dora-password")
            os.kill(standin.process.pid, signal.SIGKILL)
            standin.process.wait()
            with pytest.raises(flight.FlightError) as info:
                list(client.do_action(flight.Action("list_tables", encode_body()), call))
            assert error_code(info.value) == "unavailable"
            with pytest.raises(flight.FlightError) as info:
                raw_client(server.port, "dora", "dora-password")
            assert error_code(info.value) == "unavailable"
            client.close()
        finally:
            server.shutdown()
            backend.close()


# -- bounded OMERO text -----------------------------------------------------------------------

def test_omero_text_is_bounded_and_never_echoes_a_session_key(omero_bridge, omero_login):
    client = flight.FlightClient(f"grpc://127.0.0.1:{omero_bridge.port}")
    long_key = "k" * 5000  # what fits in gRPC's request header limit
    with pytest.raises(flight.FlightError) as info:
        client.authenticate_basic_token("__session__", long_key)
    assert "k" * 50 not in str(info.value)
    assert len(str(info.value)) < 1000
    closed = omero_login("bob")
    key = closed.getSessionId()
    closed.killSession()
    with pytest.raises(flight.FlightError) as info:
        client.authenticate_basic_token("__session__", key)
    assert key not in str(info.value)
    client.close()


def test_translate_bounds_and_redacts_omero_text():
    import omero

    from flight_server.backends.omero.errors import MAX_OMERO_TEXT, translate

    key = "0f8fad5b-d9cb-469f-a165-70867728950e"
    exc = omero.InternalException(None, None, f"session {key} failed: " + "x" * 10_000)
    error = translate(exc, "reading a table")
    assert key not in str(error) and "<session key>" in str(error)
    assert len(str(error)) < MAX_OMERO_TEXT + 200
    secret = "not-a-uuid-but-secret-key"
    error = translate(omero.SecurityViolation(None, None, f"bad {secret}"), "joining",
                      (secret,))
    assert secret not in str(error)


def test_flight_client_sees_busy_not_internal(omero_bridge, sign_in, table_id):
    conn = sign_in("bob")
    with fault(omero_bridge.standin, getWhereList={"mode": "die"}):
        with pytest.raises(flight_client.ServerBusy):
            flight_client.read_table(annotation_id=table_id, query="x > 0", omero_connector=conn,
                                     progress=False)
