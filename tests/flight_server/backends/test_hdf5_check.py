"""The HDF5 trust check remembers files that passed, and only while they stay the same.

``check_file`` keeps the identity (device, inode, size, mtime, ctime) of each file it
passed, so a table opened twice per read is checked once. A file changed in any way
after it passed, even with its mtime put back, must be checked again and refused when
it has become hostile.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from flight_server.backends.formats import hdf5_check
from flight_server.backends.formats.hdf5_check import check_file
from flight_server.errors import InvalidArgument
from tests.flight_server import hostile_hdf5 as hostile


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_bytes(b"token-signing key " * 64)
    return path


def _passed(path: Path) -> bool:
    identity = hdf5_check.file_identity(path)
    return identity is not None and identity in hdf5_check._PASSED


def test_a_file_that_passed_is_remembered(tmp_path):
    table = hostile.template(tmp_path / "t.h5")
    assert not _passed(table)
    check_file(table)
    assert _passed(table)
    check_file(table)  # remembered: passes without reading the file again


def test_a_file_rewritten_in_place_is_checked_again(tmp_path, secret):
    table = hostile.template(tmp_path / "t.h5")
    check_file(table)
    before = table.stat()
    hostile.external_storage(tmp_path / "bad.h5", secret)
    with open(table, "r+b") as fh, open(tmp_path / "bad.h5", "rb") as bad:  # same inode
        fh.truncate(0)
        shutil.copyfileobj(bad, fh)
    os.utime(table, ns=(before.st_atime_ns, before.st_mtime_ns))  # the mtime put back
    assert table.stat().st_ino == before.st_ino
    with pytest.raises(InvalidArgument, match="external"):
        check_file(table)
    assert not _passed(table)


def test_a_file_replaced_by_rename_is_checked_again(tmp_path, secret):
    table = hostile.template(tmp_path / "t.h5")
    check_file(table)
    os.replace(hostile.external_storage(tmp_path / "bad.h5", secret), table)
    with pytest.raises(InvalidArgument, match="external"):
        check_file(table)


def test_a_refusal_is_never_remembered(tmp_path, secret):
    bad = hostile.external_storage(tmp_path / "bad.h5", secret)
    for _ in range(2):
        with pytest.raises(InvalidArgument):
            check_file(bad)
    assert not _passed(bad)
