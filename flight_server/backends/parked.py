"""Tables opened to plan a read, kept a few seconds for the read itself: one open per read.

A Flight read is two calls: ``get_flight_info`` opens the table to check the
ticket and count its rows, then ``do_get`` streams it. Through OMERO.tables an
open costs a lookup (two queries), ``openTable``, the column headers and the
row count, and a close: about 20 ms; an HDF5 file's open (PyTables' nodes and
attributes) about 3 ms. The service hands the planned read's handle back
(``Backend.release_planned``) and the backend parks it here under a key it
chooses (OMERO: the bridge's session handle, so two sign-ins of one user share
nothing; the embedded store: the user) and the ref the ticket named. The next
``open_table`` of that ref with the same key takes it instead of opening the
table again; the stream then closes it as usual.

A parked table is closed when ``lifetime`` seconds pass unused, when its key
is dropped (OMERO: the sign-in ends, see ``SessionManager.on_close``), when
more than ``per_session`` are parked under one key (the oldest goes), and when
the backend closes. It was opened as the caller, with the backend's permission
checks, at most ``lifetime`` seconds before it is read.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from flight_server.backends.handles import TableHandle, TableRef

log = logging.getLogger(__name__)

#: Seconds a planned read's table stays open waiting for its do_get.
DEFAULT_LIFETIME = 5.0
#: Parked tables per sign-in, at most (a client planning many reads before reading any).
PER_SESSION = 4


@dataclass(eq=False)
class _Parked:
    handle: TableHandle
    timer: threading.Timer | None = field(default=None, repr=False)


class ParkedTables:
    """Open table handles per key (a sign-in, a user) and ref, each closed after ``lifetime``
    seconds."""

    def __init__(self, lifetime: float = DEFAULT_LIFETIME, per_session: int = PER_SESSION) -> None:
        self.lifetime = float(lifetime)
        self.per_session = max(1, int(per_session))
        self._lock = threading.Lock()
        self._parked: dict[str, OrderedDict[TableRef, _Parked]] = {}

    def park(self, key: str, ref: TableRef, handle: TableHandle) -> None:
        """Keep ``handle`` for the next :meth:`take` of ``ref`` under ``key``."""
        if self.lifetime <= 0:
            handle.close()
            return
        entry = _Parked(handle)
        with self._lock:
            mine = self._parked.setdefault(key, OrderedDict())
            replaced = [mine.pop(ref)] if ref in mine else []
            mine[ref] = entry
            while len(mine) > self.per_session:
                replaced.append(mine.popitem(last=False)[1])
            entry.timer = threading.Timer(self.lifetime, self._expire, (key, ref, entry))
            entry.timer.daemon = True
            entry.timer.start()
        for old in replaced:
            _close(old)

    def take(self, key: str, ref: TableRef) -> TableHandle | None:
        """The handle of ``ref`` parked under ``key`` (now the caller's to close), or None."""
        with self._lock:
            mine = self._parked.get(key)
            entry = mine.pop(ref, None) if mine else None
            if mine is not None and not mine:
                del self._parked[key]
        if entry is None:
            return None
        if entry.timer is not None:
            entry.timer.cancel()
        return entry.handle

    def parked(self, key: str) -> int:
        """How many tables are parked under ``key``."""
        with self._lock:
            return len(self._parked.get(key, ()))

    def drop(self, key: str) -> None:
        """Close every table parked under ``key`` (its sign-in is ending)."""
        with self._lock:
            mine = self._parked.pop(key, None)
        for entry in (mine or {}).values():
            _close(entry)

    def close(self) -> None:
        """Close every parked table."""
        with self._lock:
            everything, self._parked = self._parked, {}
        for mine in everything.values():
            for entry in mine.values():
                _close(entry)

    def _expire(self, key: str, ref: TableRef, entry: _Parked) -> None:
        with self._lock:
            mine = self._parked.get(key)
            if mine is None or mine.get(ref) is not entry:
                return  # taken, replaced or dropped meanwhile
            del mine[ref]
            if not mine:
                del self._parked[key]
        _close(entry)


def _close(entry: _Parked) -> None:
    if entry.timer is not None:
        entry.timer.cancel()
    try:
        entry.handle.close()
    except Exception:  # noqa: BLE001 - closing a parked table must not fail its caller
        log.warning("closing a parked table failed", exc_info=True)
