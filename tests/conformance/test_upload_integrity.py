"""A table is whole or absent: interrupted uploads leave nothing, committed ones survive.

Both backends (the ``site`` fixture): an upload cut by Ctrl-C (a real SIGINT,
or KeyboardInterrupt raised by the source), by an exception in the source, or
by the client process being SIGKILLed leaves ``list_tables`` unchanged and no
file behind (the store folder and spool files; OMERO's OriginalFiles). The
server cases run ``omero-flight serve`` over an embedded store: SIGTERM cuts a
running upload to nothing after the drain deadline, lets one that finishes in
time commit, and a committed upload survives a SIGKILL right after its answer.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

import flight_client
from flight_client import writing
from flight_protocol.messages import TableTicket, UploadDescriptor
from flight_server.backends.local import LocalStore
from flight_server.cli import main as cli_main
from tests.conftest import PASSWORDS, seed_store
from tests.processes import CLI

REPO_ROOT = Path(__file__).resolve().parents[2]
ROWS, CHUNK = 20_000, 2_000
SCHEMA = pa.schema([("x", pa.int64()), ("label", pa.string())])


def frame(rows: int = ROWS) -> pd.DataFrame:
    return pd.DataFrame({"x": range(rows), "label": [f"cell {i}" for i in range(rows)]})


def batches_then(exc: BaseException | None, count: int = 5) -> Iterator[pa.RecordBatch]:
    """``count`` batches, then ``exc`` raised by the source (a generator)."""
    for i in range(count):
        yield pa.RecordBatch.from_pandas(frame(CHUNK).assign(x=range(i * CHUNK, (i + 1) * CHUNK)),
                                         schema=SCHEMA, preserve_index=False)
    if exc is not None:
        raise exc


# -- what an upload may leave behind -------------------------------------------------------------
@pytest.fixture(autouse=True)
def _spool_in_the_store(request):
    """Spool embedded uploads inside the store (as ``omero-flight serve`` does), where
    leftovers are seen; the system's temporary folder is shared with other processes."""
    if "site" not in request.fixturenames:
        yield
        return
    site = request.getfixturevalue("site")
    if site.kind != "embedded":
        yield
        return
    server = site.server
    spool_dir, server.spool_dir = server.spool_dir, server.backend.tmp
    yield
    server.spool_dir = spool_dir


def _omero_files(site) -> set[int]:
    standin = site.extra["standin"]
    client = standin.login("root", standin.root_password)
    try:
        found = client.sf.getQueryService().findAllByQuery(
            "select f from OriginalFile f", None, {"omero.group": "-1"})
        return {f.id.val for f in found}
    finally:
        client.closeSession()


def _store_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and not p.name.startswith("catalog.sqlite")}


def state(site, conn) -> tuple[set[int], set]:
    """Tables the owner sees, and every file an upload could leave behind."""
    tables = {t["file_id"] for t in flight_client.list_tables(omero_connector=conn)}
    if site.kind == "omero":
        return tables, _omero_files(site)
    return tables, _store_files(site.server.backend.path)


def wait_for_state(site, conn, expected, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while (now := state(site, conn)) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert now == expected


# -- Ctrl-C and exceptions in the client --------------------------------------------------------
class _InterruptAfter:
    """A progress bar that sends this process SIGINT (Ctrl-C) after ``n`` batches were sent."""

    def __init__(self, n: int) -> None:
        self.n = n

    def update(self, rows: int) -> None:
        self.n -= 1
        if self.n == 0:
            os.kill(os.getpid(), signal.SIGINT)

    def close(self) -> None:
        pass


def _source(kind: str, tmp_path: Path):
    df = frame()
    if kind == "dataframe":
        return df
    table = pa.Table.from_pandas(df, schema=SCHEMA, preserve_index=False)
    if kind == "arrow":
        return table
    if kind == "reader":
        return pa.RecordBatchReader.from_batches(SCHEMA, table.to_batches(CHUNK))
    path = tmp_path / f"source.{kind}"
    if kind == "csv":
        df.to_csv(path, index=False)
    else:
        pq.write_table(table, path)
    return path


@pytest.mark.parametrize("kind", ["dataframe", "arrow", "reader", "csv", "parquet"])
def test_ctrl_c_mid_upload_leaves_nothing(site, owner, kind, tmp_path, monkeypatch):
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    before = state(site, owner)
    monkeypatch.setattr(writing, "bar", lambda *args, **kwargs: _InterruptAfter(3))
    with pytest.raises(KeyboardInterrupt):
        flight_client.upload_table(_source(kind, tmp_path), f"ctrl-c {kind}",
                                   parent_id=site.targets["Image"], chunk_size=CHUNK,
                                   omero_connector=owner)
    assert state(site, owner) == before


def test_ctrl_c_in_the_cli_upload_leaves_nothing(site, tmp_path, monkeypatch):
    with site.connect("owner") as conn:
        before = state(site, conn)
    path = tmp_path / "results.csv"
    frame().to_csv(path, index=False)
    user, password = site.users["owner"]
    monkeypatch.setenv("OMERO_FLIGHT_PASSWORD", password)
    monkeypatch.setattr(writing, "bar", lambda *args, **kwargs: _InterruptAfter(2))
    status = cli_main(["upload", str(path), "--name", "cli ctrl-c", "--chunk-size", str(CHUNK),
                       "--link", f"Image:{site.targets['Image']}", "--server", site.host,
                       "--port", str(site.port), "--user", user, "--no-progress"])
    assert status == 130
    with site.connect("owner") as conn:
        assert state(site, conn) == before


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), ValueError("bad row 10001")],
                         ids=["KeyboardInterrupt", "ValueError"])
def test_source_that_raises_after_some_batches_leaves_nothing(site, owner, exc):
    before = state(site, owner)
    reader = pa.RecordBatchReader.from_batches(SCHEMA, batches_then(exc))
    with pytest.raises(type(exc)):
        flight_client.upload_table(reader, "raises", parent_id=site.targets["Image"],
                                   omero_connector=owner, progress=False)
    assert state(site, owner) == before


def test_tiledb_upload_is_whole_or_absent(site, owner):
    if "tiledb" not in site.server.backend.table_formats:
        pytest.skip(f"the {site.kind} backend stores no TileDB tables")
    pytest.importorskip("tiledb")
    before = state(site, owner)
    links = (("Image", site.targets["Image"]),)
    command = UploadDescriptor("cut tiledb", links, format="tiledb",
                               explicit_commit=True).encode()
    with pytest.raises(ValueError, match="half way"):
        owner.transport.upload(command, SCHEMA, batches_then(ValueError("half way")))
    assert state(site, owner) == before
    answer = owner.transport.upload(command, SCHEMA, batches_then(None))
    assert b'"rows":10000' in answer


CLIENT = textwrap.dedent("""
    import sys, time
    import pyarrow as pa
    import flight_client
    host, port, user, password, image = sys.argv[1:6]
    schema = pa.schema([("x", pa.int64()), ("label", pa.string())])

    def batches():
        for i in range(1_000_000):
            yield pa.record_batch([pa.array(range(1000)), pa.array(["text"] * 1000)],
                                  schema=schema)
            if i == 3:
                print("sent", flush=True)
            time.sleep(0.01)

    flight_client.upload_table(pa.RecordBatchReader.from_batches(schema, batches()), "killed",
                               parent_id=int(image), server=host, port=int(port),
                               username=user, password=password, progress=False)
    print("finished", flush=True)
""")


def test_client_killed_mid_upload_leaves_nothing(site, owner):
    before = state(site, owner)
    user, password = site.users["owner"]
    proc = subprocess.Popen(
        [sys.executable, "-c", CLIENT, site.host, str(site.port), user, password,
         str(site.targets["Image"])], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        assert proc.stdout.readline().strip() == "sent"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    wait_for_state(site, owner, before)


# -- the server: SIGTERM with a drain deadline, SIGKILL after a commit -------------------------


class Served:
    """``omero-flight serve`` over a seeded embedded store, in its own process."""

    def __init__(self, store: Path, *options: str) -> None:
        self.store = store
        self.proc = subprocess.Popen(
            CLI + ["serve", "--store", str(store), "--port", "0", *options],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        line = self.proc.stdout.readline()
        match = re.search(r" on grpc://([\d.]+):(\d+)", line)
        assert match, line
        self.host, self.port = match.group(1), int(match.group(2))

    def alice(self) -> dict[str, object]:
        return {"server": self.host, "port": self.port, "username": "alice",
                "password": PASSWORDS["alice"]}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


def _tables(store: Path) -> list[tuple[str, int | None]]:
    local = LocalStore(store)
    try:
        return [(t.file.name, t.rows) for t in local.list_tables(local.lookup_caller("root"))]
    finally:
        local.close()


def _upload_in_thread(served: Served, source: pa.RecordBatchReader, name: str
                      ) -> tuple[threading.Thread, dict[str, object]]:
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["annotation_id"] = flight_client.upload_table(
                source, name, parent_id=1, progress=False, **served.alice())
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _slow_batches(started: threading.Event, stop: threading.Event, count: int,
                  strings: bool) -> Iterator[pa.RecordBatch]:
    schema = SCHEMA if strings else pa.schema([SCHEMA.field("x")])
    for i in range(count):
        if stop.is_set():
            raise RuntimeError("test over")
        columns = [pa.array(range(i * 100, (i + 1) * 100))]
        if strings:
            columns.append(pa.array([f"r{j}" for j in range(100)]))
        yield pa.record_batch(columns, schema=schema)
        if i == 2:
            started.set()
        time.sleep(0.05)


@pytest.mark.parametrize(("strings", "signals", "grace"), [
    (True, [signal.SIGTERM], "0.5"), (False, [signal.SIGINT], "0.5"),
    (False, [signal.SIGTERM, signal.SIGTERM], "600"),  # a second signal: cancel at once
], ids=["SIGTERM-spooled", "SIGINT-direct", "twice-direct"])
def test_sigterm_cuts_a_running_upload_to_nothing(tmp_path, strings, signals, grace):
    store = tmp_path / "store"
    seed_store(store).close()
    served = Served(store, "--shutdown-grace", grace)
    started, stop = threading.Event(), threading.Event()
    schema = SCHEMA if strings else pa.schema([SCHEMA.field("x")])
    source = pa.RecordBatchReader.from_batches(
        schema, _slow_batches(started, stop, 1_000_000, strings))
    thread, outcome = _upload_in_thread(served, source, "cut by sigterm")
    try:
        assert started.wait(30)
        for sig in signals:
            served.proc.send_signal(sig)
            time.sleep(0.2)
        assert served.proc.wait(timeout=30) == 0  # drained, then cancelled: a clean exit
        thread.join(timeout=30)
        assert isinstance(outcome.get("error"), flight_client.OmeroFlightError), outcome
    finally:
        stop.set()
        thread.join(timeout=30)
        served.stop()
    assert _tables(store) == []
    assert sorted(os.listdir(store / "tmp")) == []


def test_sigterm_lets_an_upload_that_ends_in_time_commit(tmp_path):
    store = tmp_path / "store"
    seed_store(store).close()
    served = Served(store, "--shutdown-grace", "60")
    started, stop = threading.Event(), threading.Event()
    source = pa.RecordBatchReader.from_batches(SCHEMA, _slow_batches(started, stop, 60, True))
    thread, outcome = _upload_in_thread(served, source, "finished while draining")
    try:
        assert started.wait(30)
        served.proc.send_signal(signal.SIGTERM)
        refused = False
        while thread.is_alive() and not refused:  # new calls are refused while draining
            try:
                flight_client.list_tables(**served.alice())
            except flight_client.OmeroFlightError:
                refused = True
        assert refused
        thread.join(timeout=60)
        assert "annotation_id" in outcome, outcome
        assert served.proc.wait(timeout=30) == 0
    finally:
        stop.set()
        thread.join(timeout=30)
        served.stop()
    assert _tables(store) == [("finished while draining", 6000)]
    assert sorted(os.listdir(store / "tmp")) == []


def test_committed_upload_survives_sigkill_right_after_its_answer(tmp_path):
    store = tmp_path / "store"
    seed_store(store).close()
    served = Served(store)
    df = frame(5_000)
    try:
        annotation_id = flight_client.upload_table(df, "kept", parent_id=1, progress=False,
                                                   chunk_size=1_000, **served.alice())
        served.proc.send_signal(signal.SIGKILL)
    finally:
        served.stop()
    served = Served(store)
    try:
        back = flight_client.read_table(annotation_id=annotation_id, **served.alice())
    finally:
        served.stop()
    pd.testing.assert_frame_equal(back[["x", "label"]], df)
    assert _tables(store) == [("kept", 5_000)]


# -- refused before anything is received; CSV types; hints that name real functions ----------
def test_link_target_is_checked_before_a_spooled_upload_is_received(site, owner):
    if site.kind != "omero":
        pytest.skip("the embedded store has no link targets to check")
    before = state(site, owner)
    sent = []

    def batches() -> Iterator[pa.RecordBatch]:
        for i in range(500):  # ~100 MB if it were all sent
            sent.append(i)
            yield pa.record_batch([pa.array(range(10_000)), pa.array(["x" * 20] * 10_000)],
                                  schema=SCHEMA)

    reader = pa.RecordBatchReader.from_batches(SCHEMA, batches())  # no string widths: spooled
    with pytest.raises(flight_client.NotFound, match=f"Image {site.outsider_image}"):
        flight_client.upload_table(reader, "not mine", parent_id=site.outsider_image,
                                   omero_connector=owner, progress=False)
    assert len(sent) < 500  # refused before the stream was read
    assert state(site, owner) == before


SPARSE_CSV = ("id,late,mixed,word,flag,empty\n"
              + "".join(f"{i},,{i},w{i},True,\n" for i in range(7))
              + "7,3,2.5,,False,\n8,4,9,z,True,\n")


def test_csv_by_path_gives_one_table_whatever_the_chunk_size(site, owner, tmp_path):
    path = tmp_path / "sparse.csv"
    path.write_text(SPARSE_CSV)
    tables = []
    for chunk_size in (1, 2, 1000):
        annotation_id = flight_client.upload_table(
            path, f"sparse {chunk_size}", parent_id=site.targets["Image"],
            chunk_size=chunk_size, omero_connector=owner, progress=False)
        tables.append(flight_client.read_table(annotation_id=annotation_id,
                                               omero_connector=owner))
    for other in tables[1:]:
        pd.testing.assert_frame_equal(other, tables[0])
    got = tables[0]
    assert {c: str(got[c].dtype) for c in ("id", "late", "mixed", "flag", "empty")} == {
        "id": "int64", "late": "float64", "mixed": "float64", "flag": "bool",
        "empty": "float64"}
    assert list(got["mixed"])[-2:] == [2.5, 9.0] and list(got["late"])[-2:] == [3.0, 4.0]
    assert list(got["word"])[:2] == ["w0", "w1"]


def _named_functions(message: str) -> list[str]:
    return re.findall(r"\b((?:read|download|upload|get|list)_[a-z_]+)\b", message)


def test_read_table_on_a_csv_file_names_the_csv_readers(site, owner):
    annotation_id, file_id = site.add_file(site.users["owner"][0], b"a,b\n1,2\n", "plain.csv",
                                           "text/csv", [("Image", site.targets["Image"])])
    with pytest.raises(flight_client.InvalidRequest) as info:
        flight_client.read_table(file_id=file_id, omero_connector=owner)
    named = _named_functions(str(info.value))
    assert "read_csv" in named and all(hasattr(flight_client, n) for n in named), named
    assert flight_client.read_csv(file_id=file_id, omero_connector=owner,
                                  progress=False).to_dict("list") == {"a": [1], "b": [2]}


@pytest.mark.parametrize("call", ["read_csv", "download_csv"])
def test_csv_reader_on_a_table_names_read_table(site, owner, call, tmp_path):
    annotation_id = flight_client.upload_table(frame(10), "a table", progress=False,
                                               parent_id=site.targets["Image"],
                                               omero_connector=owner)
    args = (tmp_path / "out.csv",) if call == "download_csv" else ()
    with pytest.raises(flight_client.InvalidRequest) as info:
        getattr(flight_client, call)(*args, annotation_id=annotation_id, omero_connector=owner,
                                     progress=False)
    named = _named_functions(str(info.value))
    assert "read_table" in named and all(hasattr(flight_client, n) for n in named), named
    assert not (tmp_path / "out.csv").exists()


def test_sigterm_cuts_a_slow_download_at_the_deadline(tmp_path):
    store = tmp_path / "store"
    seed_store(store).close()
    served = Served(store, "--shutdown-grace", "0.5")
    try:
        rows = 200_000
        table = pa.table({"x": range(rows), "text": pa.array(["t" * 100] * rows)})
        annotation_id = flight_client.upload_table(table, "big", parent_id=1, progress=False,
                                                   **served.alice())
        client = flight.FlightClient(f"grpc://{served.host}:{served.port}")
        header = client.authenticate_basic_token("alice", PASSWORDS["alice"])
        ticket = TableTicket(annotation_id=annotation_id, chunk_size=1000)
        reader = client.do_get(flight.Ticket(ticket.encode()),
                               flight.FlightCallOptions(headers=[header]))
        received = reader.read_chunk().data.num_rows
        served.proc.send_signal(signal.SIGTERM)
        with pytest.raises(flight.FlightError, match="stopping"):
            while True:  # a slow reader: ~10 s for the whole table
                received += reader.read_chunk().data.num_rows
                time.sleep(0.05)
        assert 0 < received < rows
        assert served.proc.wait(timeout=30) == 0
        client.close()
    finally:
        served.stop()


# -- plain files ----------------------------------------------------------------------------
def test_plain_file_upload_is_whole_or_absent(site, owner, tmp_path, monkeypatch):
    from flight_client import files

    path = tmp_path / "measurements.csv"
    frame(5_000).to_csv(path, index=False)
    before = state(site, owner)
    with monkeypatch.context() as patch:
        patch.setattr(files, "bar", lambda *args, **kwargs: _InterruptAfter(2))
        with pytest.raises(KeyboardInterrupt):
            flight_client.upload_file(path, site.targets["Dataset"], "Dataset",
                                      chunk_size=10_000, omero_connector=owner)
    assert state(site, owner)[1] == before[1]
    annotation_id = flight_client.upload_file(path, site.targets["Dataset"], "Dataset",
                                              chunk_size=10_000, omero_connector=owner,
                                              progress=False)
    back = flight_client.read_csv(annotation_id=annotation_id, omero_connector=owner,
                                  progress=False)
    pd.testing.assert_frame_equal(back, frame(5_000))


def test_sigterm_ends_the_server_even_with_a_stalled_upload(tmp_path):
    """A client that neither sends nor closes cannot hold the server: it exits (status 1)."""
    store = tmp_path / "store"
    seed_store(store).close()
    served = Served(store, "--shutdown-grace", "0.2")
    try:
        client = flight.FlightClient(f"grpc://{served.host}:{served.port}")
        header = client.authenticate_basic_token("alice", PASSWORDS["alice"])
        command = UploadDescriptor("stalled", (("Image", 1),), explicit_commit=True).encode()
        writer, _ = client.do_put(flight.FlightDescriptor.for_command(command), SCHEMA,
                                  flight.FlightCallOptions(headers=[header]))
        writer.write_batch(next(batches_then(None, 1)))  # then nothing more
        time.sleep(0.5)
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(timeout=30) == 1
        client.close()
    finally:
        served.stop()
    assert _tables(store) == []
