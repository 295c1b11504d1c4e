"""Direct reads: an OMERO.tables file opened from OMERO's binary repository, no Ice on the data.

When the bridge runs beside OMERO with read access to its data directory, a
table the caller may read (``Lookup.original_file`` found it through the
caller's own session, and it is an OMERO.tables file) is read by PyTables
straight from ``<data dir>/Files/...`` (``repository.original_file_path``)
through the embedded store's reader, :class:`hdf5_layout.H5Reader`, opened
read-only. Authorization stays OMERO's; only the bytes skip OMERO.tables.

OMERO.tables may hold the same file open, locked for writing, so HDF5's file
locking is off in the bridge process (see ``hdf5_layout``): the bridge never
writes these files, and a table being written through OMERO is read as far
as OMERO.tables has flushed it.
"""

from __future__ import annotations

from pathlib import Path

from flight_server.backends.base import TABLE_MIMETYPE, FileInfo, TableHandle
from flight_server.errors import InvalidArgument, NotFound
from flight_server.repository import original_file_path


class DirectReads:
    """Opens OMERO.tables files under one OMERO data directory."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        if not self.data_dir.is_dir():
            raise NotFound(f"OMERO data directory {self.data_dir} does not exist")

    def __repr__(self) -> str:
        return f"DirectReads({str(self.data_dir)!r})"

    def open(self, info: FileInfo) -> TableHandle:
        """The table's HDF5 file, read-only; ``info`` must come from the caller's lookup."""
        from flight_server.hdf5_layout import H5Reader

        if info.mimetype != TABLE_MIMETYPE:
            raise InvalidArgument(f"OriginalFile {info.file_id} ({info.name!r}) is not an "
                                  "OMERO.table")
        path = original_file_path(self.data_dir, info.file_id)
        if not path.is_file():
            raise NotFound(f"OriginalFile {info.file_id} ({info.name!r}) is not in "
                           f"{self.data_dir}: is this OMERO's data directory?")
        return H5Reader(path, info)
