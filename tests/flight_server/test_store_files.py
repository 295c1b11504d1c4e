"""The store's own files (issue 10, findings 7 and 12).

* Owner-only: folders 0700 and files 0600 whatever the umask, for a new store and
  for an existing folder opened as a store (catalog with password hashes, signing
  key, table files, plain files, temporary files).
* Temporary files live inside the store, in one folder per running store, and a
  store that opens removes those of stores that are no longer running (a server
  killed during an upload); a running store's are kept.
* A refused upload leaves nothing, whenever it is refused.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flight_protocol import columns as cols
from flight_server.backends.local import LocalStore
from tests.conftest import PASSWORDS
from tests.flight_server.wire import error_code, upload

#: Runs a real server under a given umask and stores a table and a plain file through it.
SERVE_AND_UPLOAD = textwrap.dedent("""
    import json, os, sys
    os.umask(int(sys.argv[2], 8))
    import pyarrow as pa, pyarrow.flight as flight
    from flight_protocol.messages import FileUploadDescriptor
    from flight_server.backends.local import LocalStore
    from flight_server.service import FlightService
    from tests.conftest import seed_store, connect_to, Bridge, PASSWORDS
    from tests.flight_server.wire import upload
    path = sys.argv[1]
    store = seed_store(path) if sys.argv[3] == "seed" else LocalStore(path)
    server = FlightService(store, "grpc://127.0.0.1:0")
    bridge = Bridge(server.url, "127.0.0.1", server.port, store, store.path, dict(PASSWORDS))
    client, options = connect_to(bridge, "alice")
    upload(client, options, pa.table({"s": ["a", "bb"], "n": [1, 2]}), "t")
    upload(client, options, pa.table({"n": [1]}), "t2", batch_rows=1)
    descriptor = flight.FlightDescriptor.for_command(
        FileUploadDescriptor("notes.csv", mimetype="text/csv").encode())
    schema = pa.schema([("data", pa.binary())])
    writer, reader = client.do_put(descriptor, schema, options=options)
    with writer:
        writer.write_batch(pa.record_batch([pa.array([b"a,b\\n1,2\\n"])], schema=schema))
        writer.done_writing()
        reader.read()
    server.shutdown()
    store.close()
    print("ok", flush=True)
""")


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]
    return done


def _modes(top: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(top.stat().st_mode)}
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            path = Path(root) / name
            out[str(path.relative_to(top))] = stat.S_IMODE(path.lstat().st_mode)
    return out


def _assert_owner_only(top: Path) -> None:
    modes = _modes(top)
    assert "catalog.sqlite" in modes and "secret.key" in modes
    assert any(name.startswith("Files") and mode == 0o600 for name, mode in modes.items())
    for name, mode in modes.items():
        expected = 0o700 if (top / name).is_dir() else 0o600
        assert mode == expected, f"{name}: {oct(mode)}"


@pytest.mark.parametrize("umask", ["000", "022", "002"])
def test_new_store_is_owner_only_whatever_the_umask(tmp_path, umask):
    store = tmp_path / "store"
    _run(SERVE_AND_UPLOAD, str(store), umask, "seed")
    _assert_owner_only(store)


def test_existing_folder_and_store_are_repaired(tmp_path):
    store = tmp_path / "store"
    store.mkdir(mode=0o777)
    os.chmod(store, 0o777)  # a folder that existed before, open to everyone
    _run(SERVE_AND_UPLOAD, str(store), "000", "seed")
    for root, dirs, files in os.walk(store):  # loosen everything, as an old version left it
        for name in dirs:
            os.chmod(Path(root) / name, 0o755)
        for name in files:
            os.chmod(Path(root) / name, 0o644)
    os.chmod(store, 0o755)
    LocalStore(store).close()
    _assert_owner_only(store)
    _run(SERVE_AND_UPLOAD, str(store), "000", "open")  # and it stays so in use
    _assert_owner_only(store)


#: Opens a store, starts a table upload (its temporary HDF5 file is written), then dies.
KILLED_MID_UPLOAD = textwrap.dedent("""
    import os, signal, sys
    import pyarrow as pa
    from flight_protocol import columns as cols
    from flight_server.backends.local import LocalStore
    store = LocalStore(sys.argv[1])
    caller = store.lookup_caller("alice")
    data = pa.table({"n": list(range(1000))})
    schema = cols.omero_schema(data.schema)
    writer = store.create_table(caller, "unfinished", schema, [("Image", 1)])
    writer.append(cols.conform_batch(data.to_batches()[0], schema))
    print(store.tmp, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_leftovers_of_a_killed_store_are_removed_at_start(tmp_path):
    path = tmp_path / "store"
    store = LocalStore(path)
    store.add_group("lab", "read-only")
    store.add_user("alice", PASSWORDS["alice"], ["lab"])
    writer = store.create_table(store.lookup_caller("alice"), "in progress",
                                cols.omero_schema(pa.schema([("n", pa.int64())])), [])
    running = list(store.tmp.iterdir())
    assert len(running) == 1 and running[0].parent.parent == path / "tmp"
    done = subprocess.run([sys.executable, "-c", KILLED_MID_UPLOAD, str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    dead = Path(done.stdout.strip())
    assert [p.suffix for p in dead.iterdir()] == [".h5"]  # the killed upload's file
    legacy = path / "tmp" / "upload-0123.h5"  # what older versions left directly in tmp/
    legacy.write_bytes(b"partial")

    reopened = LocalStore(path)
    assert not dead.exists() and not Path(f"{dead}.lock").exists() and not legacy.exists()
    assert running[0].exists(), "a running store's upload must be kept"
    assert reopened.tmp.exists() and list(reopened.tmp.iterdir()) == []
    assert not [t for t in reopened.list_tables(reopened.lookup_caller("alice"))]
    writer.abort()
    store.close()
    reopened.close()
    assert sorted(p.name for p in (path / "tmp").iterdir()) == []


def _refusals(data: pa.Table) -> list[tuple[str, pa.Table, int | None]]:
    bad_value = pa.table({"n": pa.array([1, None], type=pa.int64())})
    return [
        ("too wide", pa.table({f"{'c' * 60}{i:05d}": [1.0] for i in range(900)}), None),
        ("nul name", pa.table({"a\x00b": [1]}), None),
        ("no type", pa.table({"t": pa.array([1], type=pa.timestamp("s"))}), None),
        ("null in an int column after a good batch", pa.concat_tables([data, bad_value]), 2),
        ("string over its declared width", pa.table(
            {"s": pa.array(["toolong"])}).cast(pa.schema([pa.field(
                "s", pa.string(), metadata={b"omero.string_size": b"3"})])), None),
    ]


@pytest.mark.parametrize("case", range(5))
def test_refused_upload_leaves_nothing(bridge, connect, case):
    good = pa.table({"n": pa.array([1, 2], type=pa.int64())})
    what, data, batch_rows = _refusals(good)[case]
    client, options = connect("alice")
    root = bridge.store.lookup_caller("root")
    before = [t.file.file_id for t in bridge.store.list_tables(root)]
    files_before = sorted(p for p in (bridge.store_path / "Files").rglob("*"))
    with pytest.raises(flight.FlightError) as info:
        upload(client, options, data, f"refused {what}", batch_rows=batch_rows)
    assert error_code(info.value) == "invalid_argument", what
    assert [t.file.file_id for t in bridge.store.list_tables(root)] == before
    assert sorted(p for p in (bridge.store_path / "Files").rglob("*")) == files_before
    assert list(bridge.store.tmp.iterdir()) == []


def test_table_writer_refused_while_creating_its_file_leaves_nothing(tmp_path):
    from flight_server.backends.formats.hdf5 import H5Writer

    schema = cols.omero_schema(pa.schema([(f"{'c' * 60}{i:05d}", pa.float64())
                                          for i in range(900)]))
    target = tmp_path / "t.h5"
    with pytest.raises(cols.UnsupportedColumn, match="too wide"):
        H5Writer(target, schema)
    assert not target.exists()

