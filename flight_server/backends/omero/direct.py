"""Direct reads: an OMERO.tables file opened from OMERO's binary repository, no Ice on the data.

When the bridge runs beside OMERO with read access to its data directory, a
table the caller may read (``Lookup.original_file`` found it through the
caller's own session, and it is an OMERO.tables file) is read by PyTables
straight from ``<data dir>/Files/...`` (``repository.original_file_path``)
through the embedded store's reader, :class:`formats.hdf5.H5Reader`, opened
read-only. Authorization stays OMERO's; only the bytes skip OMERO.tables.

The caller's session stays in use (``OmeroSession.hold``) while the file is
open, so a long stream read from disk, which makes no OMERO call, does not
count as idle.

A replica without the caller's session serves a signed range ticket another
replica planned (``open_granted``, see ``flight_server/tickets``): it trusts the
signature and expiry; the file still passes the HDF5 trust check.

OMERO.tables may hold the same file open, locked for writing, so HDF5's file
locking is off in the bridge process (see ``backends.formats.hdf5``): the bridge never
writes these files, and a table being written through OMERO is read as far
as OMERO.tables has flushed it.
"""

from __future__ import annotations

import threading
from pathlib import Path

from flight_server.backends.base import TABLE_MIMETYPE, FileInfo, TableHandle
from flight_server.backends.handles import WrappedHandle
from flight_server.backends.omero.sessions import OmeroSession
from flight_server.errors import InvalidArgument, NotFound
from flight_server.repository import original_file_path


class DirectReads:
    """Opens OMERO.tables files under one OMERO data directory."""

    def __init__(self, data_dir: str | Path) -> None:
        from flight_server.backends.formats.shared import SharedReaders

        self.data_dir = Path(data_dir)
        if not self.data_dir.is_dir():
            raise NotFound(f"OMERO data directory {self.data_dir} does not exist")
        #: Files kept open briefly for the next read of the same table (any caller's).
        self.readers = SharedReaders()

    def close(self) -> None:
        """Close the files no read uses (the others as their reads end)."""
        self.readers.close()

    def __repr__(self) -> str:
        return f"DirectReads({str(self.data_dir)!r})"

    def open(self, info: FileInfo, session: OmeroSession | None = None) -> TableHandle:
        """The table's HDF5 file, read-only; ``info`` must come from the caller's lookup."""
        if info.mimetype != TABLE_MIMETYPE:
            raise InvalidArgument(f"OriginalFile {info.file_id} ({info.name!r}) is not an "
                                  "OMERO.table")
        path = original_file_path(self.data_dir, info.file_id)
        if not path.is_file():
            raise NotFound(f"OriginalFile {info.file_id} ({info.name!r}) is not in "
                           f"{self.data_dir}: is this OMERO's data directory?")
        reader = self.readers.open(path, info)
        return reader if session is None else HeldHandle(reader, session)

    def open_granted(self, file_id: int) -> TableHandle:
        """A table a verified signed range ticket grants, with no OMERO session: the replica
        that issued it authorized the read through the caller's session."""
        return self.open(FileInfo(file_id, "", TABLE_MIMETYPE, 0, 0, 0))


class HeldHandle(WrappedHandle):
    """A table handle that keeps an OMERO session in use until it is closed."""

    def __init__(self, handle: TableHandle, session: OmeroSession) -> None:
        super().__init__(handle, handle.info)
        self._session = session
        self._lock = threading.Lock()
        self._held = True
        session.hold()

    def _using(self) -> None:
        self._session.touch()

    def close(self) -> None:
        with self._lock:
            held, self._held = self._held, False
        try:
            self._inner.close()
        finally:
            if held:
                self._session.release()
