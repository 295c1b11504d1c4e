"""The storage formats under ``backends/``: where the HDF5 file-locking setting lives, and
an import graph with no cycle between the contract and the formats.

Each check runs in a fresh interpreter: libhdf5 reads HDF5_USE_FILE_LOCKING once, when
PyTables or h5py first loads it, and this test process loaded it long ago.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from flight_protocol import columns as cols
from flight_server.backends.formats.hdf5 import H5Writer

REPO = Path(__file__).resolve().parents[3]


def run(code: str, hdf5_locking: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HDF5_USE_FILE_LOCKING"}
    if hdf5_locking is not None:
        env["HDF5_USE_FILE_LOCKING"] = hdf5_locking
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_the_server_package_and_the_contract_change_no_process_setting():
    done = run("""
        import os, sys
        import flight_server, flight_server.backends.base
        assert "HDF5_USE_FILE_LOCKING" not in os.environ, os.environ["HDF5_USE_FILE_LOCKING"]
        assert "tables" not in sys.modules and "h5py" not in sys.modules
        print("clean")
    """)
    assert done.stdout.strip() == "clean", done.stderr


def test_contract_and_formats_import_each_other_in_one_direction_only():
    done = run("""
        import sys
        import flight_server.backends.formats.hdf5, flight_server.backends.formats.tiledb
        assert "flight_server.backends.base" not in sys.modules
        for name in [m for m in sys.modules if m.startswith("flight_server.backends")]:
            del sys.modules[name]
        import flight_server.backends.base
        assert not [m for m in sys.modules if m.startswith("flight_server.backends.formats")]
        print("one way")
    """)
    assert done.stdout.strip() == "one way", done.stderr


@pytest.fixture
def held_table(tmp_path: Path) -> Iterator[Path]:
    """An OMERO.tables file that another process holds open for writing, with HDF5's file
    locks on (as OMERO.tables holds the tables it has open)."""
    path = tmp_path / "held.h5"
    writer = H5Writer(path, cols.omero_schema(pa.schema([("a", pa.int64())])))
    writer.append(pa.record_batch({"a": pa.array([1, 2, 3], pa.int64())}))
    writer.close()
    env = {**os.environ, "HDF5_USE_FILE_LOCKING": "TRUE"}
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, tables; f = tables.open_file(sys.argv[1], 'a'); "
         "print('held', flush=True); sys.stdin.read(); f.close()", str(path)],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    yield path
    holder.communicate("", timeout=30)


READ = """
    import os, sys
    from flight_server.backends.formats.hdf5 import H5Reader
    print(os.environ["HDF5_USE_FILE_LOCKING"])
    try:
        with H5Reader(sys.argv[1]) as table:
            print(table.read_range(["a"], 0, 3).to_pydict())
    except Exception as exc:
        print(type(exc).__name__)
"""


def test_the_hdf5_format_reads_a_table_another_process_holds_locked(held_table):
    done = run(READ.replace("sys.argv[1]", repr(str(held_table))))
    assert done.stdout.split("\n")[:2] == ["FALSE", "{'a': [1, 2, 3]}"], done.stderr


def test_an_explicit_locking_setting_is_kept(held_table):
    done = run(READ.replace("sys.argv[1]", repr(str(held_table))), hdf5_locking="TRUE")
    assert done.stdout.split("\n")[:2] == ["TRUE", "NotFound"], done.stderr
