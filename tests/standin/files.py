"""RawFileStore for plain files kept in the OMERO-like binary repository."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import omero
import omero.api

from flight_server.repository import original_file_path
from tests.standin.catalog import Catalog, Record
from tests.standin.dispatch import VOID, amd
from tests.standin.fallback import answers_unimplemented
from tests.standin.model import to_model

if TYPE_CHECKING:
    from tests.standin.factory import ServiceFactoryI


def file_path(data_dir: str | Path, file_id: int) -> Path:
    """Where OriginalFile ``file_id``'s bytes live; parent folders are created."""
    path = original_file_path(data_dir, file_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def refresh_size_and_hash(catalog: Catalog, data_dir: str | Path, record: Record) -> None:
    """Set an OriginalFile's size and SHA1 from the bytes on disk."""
    path = file_path(data_dir, record.id)
    digest = hashlib.sha1()
    size = 0
    if path.exists():
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
    with catalog.lock:
        record.fields["size"] = size
        record.fields["hash"] = digest.hexdigest()


@answers_unimplemented
class RawFileStoreI(omero.api.RawFileStore):
    """Reads and writes one OriginalFile's bytes, with the caller's permissions."""

    def __init__(self, sf: ServiceFactoryI) -> None:
        self.sf = sf
        self.identity: Any = None
        self.record: Record | None = None

    def _path(self) -> Path:
        if self.record is None:
            raise omero.ApiUsageException(None, None, "RawFileStore: call setFileId first")
        return file_path(self.sf.server.data_dir, self.record.id)

    def _writable(self) -> None:
        self.sf.catalog.check_write(self.sf.user, self.record)

    @amd
    def setFileId_async(self, file_id: int, current: Any = None) -> Any:
        self.sf.check(current)
        record = self.sf.catalog.get("OriginalFile", file_id)
        if record is None or not self.sf.catalog.can_read(self.sf.user, record,
                                                          self.sf.read_group(current)):
            raise omero.SecurityViolation(
                None, None, f"user {self.sf.user.name} cannot read OriginalFile:{file_id}")
        self.record = record
        return VOID

    @amd
    def getFileId_async(self, current: Any = None) -> Any:
        return None if self.record is None else omero.rtypes.rlong(self.record.id)

    @amd
    def size_async(self, current: Any = None) -> Any:
        self.sf.check(current)
        path = self._path()
        return path.stat().st_size if path.exists() else 0

    @amd
    def exists_async(self, current: Any = None) -> Any:
        return self._path().exists()

    @amd
    def read_async(self, position: int, length: int, current: Any = None) -> Any:
        self.sf.check(current)
        path = self._path()
        if not path.exists():
            return b""
        with open(path, "rb") as handle:
            handle.seek(position)
            return handle.read(length)

    @amd
    def write_async(self, buf: bytes, position: int, length: int, current: Any = None) -> Any:
        self.sf.check(current)
        path = self._path()
        self._writable()
        with open(path, "r+b" if path.exists() else "w+b") as handle:
            handle.seek(position)
            handle.write(bytes(buf[:length]))
        return VOID

    @amd
    def truncate_async(self, length: int, current: Any = None) -> Any:
        self.sf.check(current)
        path = self._path()
        self._writable()
        if not path.exists():
            path.touch()
        if path.stat().st_size <= length:
            return False
        os.truncate(path, length)
        return True

    @amd
    def save_async(self, current: Any = None) -> Any:
        self.sf.check(current)
        self._path()
        self._writable()
        refresh_size_and_hash(self.sf.catalog, self.sf.server.data_dir, self.record)
        return to_model(self.sf.catalog, self.record)

    @amd
    def close_async(self, current: Any = None) -> Any:
        if self.record is not None and self.sf.catalog.can_write(self.sf.user, self.record):
            refresh_size_and_hash(self.sf.catalog, self.sf.server.data_dir, self.record)
        self.sf.forget_stateful(self.identity)
        return VOID
