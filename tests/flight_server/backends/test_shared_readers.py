"""Shared HDF5 readers: one open per file while it stays the same, a new check when not."""

from __future__ import annotations

import os
import threading

import pytest

from flight_server.backends.formats.shared import SharedReaders
from flight_server.backends.handles import FileInfo
from flight_server.errors import InvalidArgument
from tests.flight_server import hostile_hdf5 as hostile

INFO = FileInfo(1, "t.h5", "OMERO.tables", 0, 0, 0)


def test_reads_share_one_open_file(tmp_path):
    path = hostile.template(tmp_path / "t.h5", rows=5)
    readers = SharedReaders(linger=60)
    closed = []
    handles = [readers.open(path, INFO, on_close=closed.append) for _ in range(3)]
    assert readers.opened == 1
    assert handles[0].read_range(["n"], 0, 5).column("n").to_pylist() == [0, 1, 2, 3, 4]
    for h in handles:
        h.close()
        h.close()  # a second close ends nothing more
    assert closed == handles
    assert readers.idle() == 1
    readers.close()
    assert readers.idle() == 0


def test_a_changed_file_is_checked_and_opened_again(tmp_path):
    path = hostile.template(tmp_path / "t.h5", rows=2)
    readers = SharedReaders(linger=60)
    readers.open(path, INFO).close()
    secret = tmp_path / "secret"
    secret.write_bytes(b"key " * 100)
    os.replace(hostile.external_storage(tmp_path / "bad.h5", secret), path)
    with pytest.raises(InvalidArgument, match="external"):
        readers.open(path, INFO)
    seven = hostile.template(tmp_path / "seven.h5", rows=7)
    with open(path, "r+b") as fh:  # the same inode, written again
        fh.truncate(0)
        fh.write(seven.read_bytes())
    with readers.open(path, INFO) as handle:
        assert handle.num_rows == 7
    assert readers.opened == 2
    readers.close()


def test_an_unused_file_closes_after_linger(tmp_path):
    path = hostile.template(tmp_path / "t.h5")
    readers = SharedReaders(linger=0.2)
    readers.open(path, INFO).close()
    assert readers.idle() == 1
    done = threading.Event()
    for _ in range(100):
        if readers.idle() == 0:
            done.set()
            break
        done.wait(0.05)
    assert done.is_set()


def test_idle_files_are_bounded(tmp_path):
    readers = SharedReaders(linger=60, max_idle=2)
    paths = [hostile.template(tmp_path / f"t{i}.h5") for i in range(4)]
    for p in paths:
        readers.open(p, INFO).close()
    assert readers.idle() == 2
    readers.close()


def test_a_file_in_use_stays_open_when_the_cache_closes(tmp_path):
    path = hostile.template(tmp_path / "t.h5", rows=3)
    readers = SharedReaders(linger=60)
    handle = readers.open(path, INFO)
    readers.close()
    assert handle.read_range(["n"], 0, 3).num_rows == 3
    handle.close()
