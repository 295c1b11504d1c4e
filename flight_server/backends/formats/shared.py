"""HDF5 tables kept open a few seconds after their last read, shared by every read of the file.

Opening an OMERO.tables file costs about 2.5 ms (PyTables loads the nodes and
attributes of ``/OME``), and a read opens it more than once: to plan it
(``get_flight_info``), to stream it (``do_get``), and once more for each
endpoint of a split read. :class:`SharedReaders` keeps one
:class:`~flight_server.backends.formats.hdf5.H5Reader` per file while reads
use it and for ``linger`` seconds after the last one ends; every read gets its
own :class:`SharedHandle` (its own ``info`` and ``on_close``) over it.

Only the bytes are shared. The backend decides, for every read and before it
asks here, whether the caller may read the file. A reader is keyed by the
file's identity (device, inode, size, mtime, ctime: :func:`.hdf5_check.file_identity`),
so a file that changes in any way, a table OMERO.tables is still writing
included, is checked and opened again; the old reader closes once unused.
An ``H5Reader`` holds no per-read state and reads under ``HDF5_LOCK``, so
reads in several threads share it safely.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from flight_server.backends.formats.hdf5 import H5Reader
from flight_server.backends.formats.hdf5_check import file_identity
from flight_server.backends.handles import FileInfo, OnClose, TableHandle, WrappedHandle

#: Seconds an unused reader stays open for the next read of its file.
LINGER = 10.0
#: Unused readers kept open at most (the least recently used close first).
MAX_IDLE = 32


#: Every live cache, closed at exit before PyTables closes (and warns of) files left open.
_LIVE: weakref.WeakSet[SharedReaders] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for readers in list(_LIVE):
        readers.close()


@dataclass(eq=False)
class _Entry:
    key: tuple[int, ...] | Path
    reader: H5Reader
    users: int = 0
    idle_since: float = field(default=0.0)


class SharedReaders:
    """Open :class:`H5Reader` per file, shared by concurrent reads and kept ``linger`` s."""

    def __init__(self, linger: float = LINGER, max_idle: int = MAX_IDLE) -> None:
        self.linger = float(linger)
        self.max_idle = max(0, int(max_idle))
        self._lock = threading.Lock()
        self._entries: dict[tuple[int, ...] | Path, _Entry] = {}
        self._sweeper: threading.Timer | None = None
        self._closed = False
        #: Files opened (checked and opened by PyTables) so far: what sharing saved shows here.
        self.opened = 0
        _LIVE.add(self)

    def open(self, path: Path, info: FileInfo, on_close: OnClose | None = None) -> TableHandle:
        """A handle on the table in ``path`` (checked by :func:`.hdf5_check.check_file` when
        first opened), for one read; close it when the read ends."""
        key = file_identity(path)
        entry = self._take(key) if key is not None else None
        if entry is None:
            reader = H5Reader(path, info)  # outside the lock: opening takes milliseconds
            spare = None
            with self._lock:
                self.opened += 1
                shared = key is not None and not self._closed
                found = self._entries.get(key) if shared else None  # type: ignore[arg-type]
                if found is not None:  # another read opened it meanwhile: use that one
                    found.users += 1
                    entry, spare = found, reader
                else:
                    entry = _Entry(key if key is not None else path, reader, users=1)
                    if shared:
                        self._entries[entry.key] = entry
            if spare is not None:
                spare.close()
        return SharedHandle(self, entry, info, on_close)

    def _take(self, key: tuple[int, ...]) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.users += 1
            return entry

    def _release(self, entry: _Entry) -> None:
        closing: list[_Entry] = []
        with self._lock:
            entry.users -= 1
            if entry.users > 0:
                return
            if self._entries.get(entry.key) is not entry or self._closed:
                closing.append(entry)  # never shared, or the cache closed meanwhile
            else:
                entry.idle_since = time.monotonic()
                idle = sorted((e for e in self._entries.values() if e.users == 0),
                              key=lambda e: e.idle_since)
                for old in idle[:max(0, len(idle) - self.max_idle)]:
                    del self._entries[old.key]
                    closing.append(old)
                self._schedule()
        for old in closing:
            old.reader.close()

    def _schedule(self) -> None:
        if self._sweeper is None and any(e.users == 0 for e in self._entries.values()):
            self._sweeper = threading.Timer(self.linger, self._sweep)
            self._sweeper.daemon = True
            self._sweeper.start()

    def _sweep(self) -> None:
        closing = []
        with self._lock:
            self._sweeper = None
            now = time.monotonic()
            for key, e in list(self._entries.items()):
                if e.users == 0 and now - e.idle_since >= self.linger - 0.01:
                    del self._entries[key]
                    closing.append(e)
            if not self._closed:
                self._schedule()
        for e in closing:
            e.reader.close()

    def idle(self) -> int:
        """Readers open now that no read uses."""
        with self._lock:
            return sum(1 for e in self._entries.values() if e.users == 0)

    def close(self) -> None:
        """Close every unused reader now, and each one in use when its last read ends."""
        with self._lock:
            self._closed = True
            if self._sweeper is not None:
                self._sweeper.cancel()
                self._sweeper = None
            closing = [e for e in self._entries.values() if e.users == 0]
            self._entries = {k: e for k, e in self._entries.items() if e.users > 0}
        for e in closing:
            e.reader.close()


class SharedHandle(WrappedHandle):
    """One read's handle on a shared reader: its own ``info``; ``close`` ends only this read."""

    def __init__(self, readers: SharedReaders, entry: _Entry, info: FileInfo,
                 on_close: OnClose | None) -> None:
        super().__init__(entry.reader, info)
        self._readers, self._entry = readers, entry
        self._on_close = on_close
        self._lock = threading.Lock()
        self._open = True

    def close(self) -> None:
        with self._lock:
            was_open, self._open = self._open, False
        if not was_open:
            return
        try:
            self._readers._release(self._entry)
        finally:
            if self._on_close is not None:
                self._on_close(self)
