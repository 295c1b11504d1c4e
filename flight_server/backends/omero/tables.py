"""An open OMERO.table (``omero.grid.TablePrx``) as a :class:`TableHandle`.

Reads use ``Table.read`` for row ranges, ``Table.slice`` for row lists and
``Table.getWhereList`` for checked queries, each through the call gate.

Range reads fetch blocks of about ``CALL_BYTES`` of values, whatever the
stream's chunk size (the rows per call follow from the row width), and slice
the stream's chunks from the block: OMERO.tables reads whole HDF5 rows once
per requested column in every call, so few large calls cost far less than
many small ones (a 100-column table read in 5,000-row calls takes twice as
long as in 40,000-row calls). While a block streams, the next one is fetched
in a background thread (one block ahead, never more), so OMERO.tables reads
and Ice marshals it while the bridge converts and sends this one.

Row lists are read with ``Table.slice`` in calls of at most
:data:`SLICE_ROWS` rows, the next call in flight while this one is converted:
HDF5's point selection costs more per row the more rows and chunks one call
spans (100,000 scattered rows of 10M read in 1,000-row calls take half the
time of 10,000-row calls), while a dense run of rows is read as one range
with ``Table.read`` and the rows picked from it. A query's next scan window
is asked of ``getWhereList`` while this window's rows are read.

Every read asks OMERO.tables to leave ``Data.rowNumbers`` out
(:data:`NO_ROW_NUMBERS`; the bridge numbers rows itself), so no row numbers
are built, marshalled and decoded beside the values. The handle closes the table exactly
once, after any read ahead has finished; ``streaming.batches`` closes it when
a stream ends, fails, or is dropped by a client that went away. While it is
open the caller's OMERO session is in use (``OmeroSession.hold``), so a slow
reader is never signed out by the idle timer.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
from omero.rtypes import rbool, rdouble, rlong, rstring

from flight_server.backends.base import FileInfo, TableHandle
from flight_server.backends.omero.calls import CallGate
from flight_server.backends.omero.grid import schema_of, to_arrow
from flight_server.backends.omero.sessions import OmeroSession
from flight_server.query import CheckedQuery
from flight_server.streaming import row_width

log = logging.getLogger(__name__)

#: Bytes of values per OMERO call, whatever chunk the stream asks for ...
CALL_BYTES = 16 << 20
#: ... but at least this many rows (OMERO.tables' cost per call and column is high) ...
MIN_CALL_ROWS = 50_000
#: ... and never more than this, well under omero-py's Ice.MessageSizeMax (250 MB) ...
MAX_CALL_BYTES = 64 << 20
#: ... nor more whole HDF5 rows than this many bytes: OMERO.tables holds every row of a
#: call whole in its own memory, whichever columns were asked for (issue 11, fault 5).
MAX_CALL_ROW_BYTES = 64 << 20
#: Rows per ``Table.slice`` call for scattered rows (HDF5 point selection grows faster than
#: the rows selected) ...
SLICE_ROWS = 1_000
#: ... while rows at least this dense in their span are read as one range and picked.
DENSE_SPAN = 2
#: Row-list calls in flight beyond the one being converted.
PIECES_AHEAD = 2
#: Call context asking OMERO.tables not to send ``Data.rowNumbers`` (omero-py's
#: ``HdfStorage._as_data`` reads it; a server that does not know it sends them anyway).
NO_ROW_NUMBERS = {"omero.tables.include_row_numbers": "false"}

_VALUE_NAME = re.compile(r"\b(v\d+)\b")
_PLAIN_BYTE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def bytes_literal(data: bytes) -> str:
    """A ``b'...'`` literal with every byte but letters and digits written ``\\xNN``.

    No quote, backslash-letter, dot or whitespace survives in the text, so
    numexpr's own blacklist and PyTables' parser see a plain constant.
    """
    return "b'" + "".join(chr(b) if b in _PLAIN_BYTE else f"\\x{b:02x}" for b in data) + "'"


def where_arguments(query: CheckedQuery) -> tuple[str, dict[str, Any]]:
    """``(condition, variables)`` for ``Table.getWhereList`` from a checked query.

    Columns travel as rstring variables (OMERO.tables looks them up by name);
    numbers and booleans as rlong/rdouble/rbool. OMERO.tables would take an
    rstring as a column name, so string values are written into the condition
    as escaped bytes literals instead.
    """
    variables: dict[str, Any] = {k: rstring(name) for k, name in query.columns.items()}
    literals: dict[str, str] = {}
    for key, value in query.values.items():
        if isinstance(value, bytes | str):
            literals[key] = bytes_literal(value.encode() if isinstance(value, str) else value)
        elif isinstance(value, bool):
            variables[key] = rbool(value)
        elif isinstance(value, int):
            variables[key] = rlong(value)
        else:
            variables[key] = rdouble(float(value))
    condition = _VALUE_NAME.sub(lambda m: literals.get(m.group(1), m.group(1)), query.expression)
    return condition, variables


def read_rows_per_call(selected: pa.Schema, stored: pa.Schema) -> int:
    """Rows per ``Table.read``/``slice`` call for the ``selected`` columns of a table whose
    whole rows are ``stored``: about :data:`CALL_BYTES` of selected values, at least
    :data:`MIN_CALL_ROWS`, at most :data:`MAX_CALL_BYTES` of them, and never more than
    :data:`MAX_CALL_ROW_BYTES` of whole rows, which OMERO.tables reads whatever is asked."""
    width = row_width(selected)
    rows = min(max(CALL_BYTES // width, MIN_CALL_ROWS), MAX_CALL_BYTES // width)
    return max(1, min(rows, MAX_CALL_ROW_BYTES // row_width(stored)))


class OmeroTable(TableHandle):
    """A table opened through ``SharedResources.openTable`` as the caller."""

    def __init__(self, gate: CallGate, session: OmeroSession, info: FileInfo, table: Any) -> None:
        self.info = info
        self._gate, self._session, self._table = gate, session, table
        self._lock = threading.Lock()
        self._closed = False
        self._ahead: tuple[tuple[tuple[str, ...], int, int], Future] | None = None
        self._held: tuple[tuple[tuple[str, ...], int, int], pa.RecordBatch] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._where_ahead: tuple[tuple[Any, int, int], Future] | None = None
        self._until: int | None = None  # the end of the range being streamed (will_read)
        self._reader = table.ice_context({**(table.ice_getContext() or {}), **NO_ROW_NUMBERS})
        session.hold()  # in use until closed, however slowly the stream is read
        try:
            with self._call("reading the table's columns"):
                self._schema = schema_of(table.getHeaders())
                self._rows = int(table.getNumberOfRows())
        except BaseException:
            self.close()
            raise
        self._index = {name: i for i, name in enumerate(self._schema.names)}

    def _call(self, doing: str) -> Any:
        return self._gate.call(self._session, f"{doing} ({self.info.name!r}, "
                                              f"OriginalFile {self.info.file_id})")

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    @property
    def num_rows(self) -> int:
        return self._rows

    def _batch(self, names: Sequence[str], data_columns: list[Any]) -> pa.RecordBatch:
        fields = [self._schema.field(n) for n in names]
        arrays = [to_arrow(c, f) for c, f in zip(data_columns, fields, strict=True)]
        return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))

    def _rows_per_call(self, columns: Sequence[str]) -> int:
        return read_rows_per_call(pa.schema([self._schema.field(c) for c in columns]),
                                  self._schema)

    def _most_rows(self, columns: Sequence[str]) -> int:
        """The most rows one call may hold: :data:`MAX_CALL_BYTES` of the values asked for and
        :data:`MAX_CALL_ROW_BYTES` of whole rows."""
        selected = row_width(pa.schema([self._schema.field(c) for c in columns]))
        return max(1, min(MAX_CALL_BYTES // selected,
                          MAX_CALL_ROW_BYTES // row_width(self._schema)))

    def _fetch(self, columns: tuple[str, ...], start: int, stop: int) -> pa.RecordBatch:
        """Rows ``[start, stop)``, in as many ``Table.read`` calls as their size needs."""
        indexes = [self._index[c] for c in columns]
        step = self._most_rows(columns)
        parts = []
        for first in range(start, stop, step):
            last = min(first + step, stop)
            parts.append(self._batch(columns, self._read(indexes, first, last)))
        return parts[0] if len(parts) == 1 else pa.concat_batches(parts)

    def _read(self, indexes: list[int], first: int, last: int) -> list[Any]:
        """The columns of rows ``[first, last)``: one ``Table.read`` call."""
        with self._call(f"reading rows {first}..{last}"):
            return list(self._reader.read(indexes, first, last).columns)

    def _slice(self, indexes: list[int], rows: np.ndarray) -> list[Any]:
        """The columns of the given ascending rows: one ``Table.slice`` call."""
        with self._call(f"reading {len(rows)} rows"):
            return list(self._reader.slice(indexes, rows.tolist()).columns)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(PIECES_AHEAD + 1, thread_name_prefix="omero-read-ahead")
        return self._pool

    def will_read(self, columns: Sequence[str], start: int, stop: int) -> None:
        """Blocks and the read ahead stop at ``stop``: a split read's other endpoints read
        the rows after it."""
        self._until = min(stop, self._rows)

    def _end(self) -> int:
        """Where blocks and the read ahead end: the streamed range's end, when known."""
        return self._rows if self._until is None else self._until

    def _block(self, columns: tuple[str, ...], start: int, stop: int
               ) -> tuple[tuple[tuple[str, ...], int, int], pa.RecordBatch]:
        """The block of rows that begins at ``start``, from the read ahead when it fetched
        this block: whole chunks of ``stop - start`` rows (so no chunk straddles two blocks),
        the rows left split evenly over as few OMERO calls as they need (a 100,000-row read
        in 50,000-row calls is two calls, not 46,710 + 46,710 + 6,580 rows), and never more
        than one call may hold."""
        chunk = stop - start
        left = self._end() - start
        calls = max(1, _ceil_div(left, self._rows_per_call(columns)))
        rows = _ceil_div(_ceil_div(left, calls), chunk) * chunk
        if rows > self._most_rows(columns):
            rows = max(1, self._rows_per_call(columns) // chunk) * chunk
        stop = max(stop, min(start + rows, self._end()))
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0][0] == columns and ahead[0][1] == start \
                and ahead[0][2] >= stop:
            return ahead[0], ahead[1].result()
        if ahead is not None:
            _settle(ahead[1])
        return (columns, start, stop), self._fetch(columns, start, stop)

    def read_range(self, columns: Sequence[str], start: int, stop: int) -> pa.RecordBatch:
        """Rows ``[start, stop)``, sliced from the current block of rows (see ``_block``)."""
        self._session.touch()  # progress, even when served from the block in hand
        stop = min(stop, self._rows)
        if not columns or stop <= start:
            return self._empty(columns)
        names = tuple(columns)
        held = self._held
        if held is None or held[0][0] != names or not held[0][1] <= start < stop <= held[0][2]:
            self._held = held = self._block(names, start, stop)
            _, first, end = held[0]
            following = (names, end, min(end + (end - first), self._end()))
            if following[1] < following[2] and not self._closed:
                self._ahead = (following, self._executor().submit(self._fetch, *following))
        (_, first, _), block = held
        return block.slice(start - first, stop - start)

    def read_rows(self, columns: Sequence[str], rows: np.ndarray) -> pa.RecordBatch:
        rows = np.asarray(rows, dtype=np.int64)
        if not columns or len(rows) == 0:
            return self._empty(columns)
        # OMERO.tables reads coordinates in ascending order: read each row once, then reorder.
        unique, order = np.unique(rows, return_inverse=True)
        indexes = [self._index[c] for c in columns]
        names = tuple(columns)
        parts = [self._batch(names, data) if picked is None
                 else self._batch(names, data).take(picked)
                 for data, picked in self._pipelined(
                     self._pieces(unique, self._rows_per_call(columns)),
                     lambda piece: self._piece(indexes, piece))]
        batch = parts[0] if len(parts) == 1 else pa.concat_batches(parts)
        if len(unique) == len(rows) and np.array_equal(unique, rows):
            return batch
        return batch.take(pa.array(order, type=pa.int64()))

    @staticmethod
    def _pieces(unique: np.ndarray, most: int) -> list[tuple[np.ndarray, bool]]:
        """Ascending rows cut into calls, each ``(rows, dense)``. A dense run, at least
        :data:`SLICE_ROWS` rows that are at least 1/:data:`DENSE_SPAN` of the rows they span
        (at most ``most``), is read as one range; other rows are sliced :data:`SLICE_ROWS`
        at a time. Runs are tried at doubling lengths, so cutting stays cheap."""
        pieces = []
        i = 0
        while i < len(unique):
            run = unique[i:i + most]
            run = run[:int(np.searchsorted(run, run[0] + most))]
            count, size = 0, SLICE_ROWS
            while size <= len(run) and int(run[size - 1] - run[0]) < DENSE_SPAN * size:
                count = size
                size = len(run) if size < len(run) < 2 * size else 2 * size
            piece = (run[:count], True) if count else (run[:SLICE_ROWS], False)
            pieces.append(piece)
            i += len(piece[0])
        return pieces

    def _piece(self, indexes: list[int], piece: tuple[np.ndarray, bool]
               ) -> tuple[list[Any], pa.Array | None]:
        """One call's columns, and the positions to pick from them when a range was read."""
        rows, dense = piece
        if not dense:
            return self._slice(indexes, rows), None
        first, last = int(rows[0]), int(rows[-1]) + 1
        picked = None if last - first == len(rows) else pa.array(rows - first, type=pa.int64())
        return self._read(indexes, first, last), picked

    def _pipelined(self, pieces: list[Any], fetch: Callable[[Any], Any]) -> Iterator[Any]:
        """``fetch(piece)`` for each piece in order, with up to :data:`PIECES_AHEAD` more
        running while one is used (OMERO.tables then always has the next call queued)."""
        if len(pieces) == 1:
            yield fetch(pieces[0])
            return
        pool = self._executor()
        running: deque[Future] = deque()
        try:
            for piece in pieces:
                running.append(pool.submit(fetch, piece))
                if len(running) > PIECES_AHEAD:
                    yield running.popleft().result()
            while running:
                yield running.popleft().result()
        finally:
            for future in running:
                _settle(future)

    def _empty(self, columns: Sequence[str]) -> pa.RecordBatch:
        """No rows (or no columns: the streaming layer adds the row numbers)."""
        fields = [self._schema.field(c) for c in columns]
        return pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in fields],
                                          schema=pa.schema(fields))

    def where(self, query: CheckedQuery, start: int, stop: int) -> np.ndarray:
        """Matching rows of ``[start, stop)``; the next window of the same size is asked of
        OMERO.tables at once, in the background, for the call that usually follows."""
        stop = min(stop, self._rows)
        if stop <= start:
            return np.empty(0, dtype=np.int64)
        ahead, self._where_ahead = self._where_ahead, None
        if ahead is not None and ahead[0] == (query, start, stop):
            found = ahead[1].result()
        else:
            if ahead is not None:
                _settle(ahead[1])
            found = self._where(query, start, stop)
        following = (query, stop, min(stop + (stop - start), self._rows))
        if following[1] < following[2] and not self._closed:
            self._where_ahead = (following, self._executor().submit(self._where, *following))
        return found

    def _where(self, query: CheckedQuery, start: int, stop: int) -> np.ndarray:
        condition, variables = where_arguments(query)
        with self._call(f"running the query {query.source!r}"):
            found = self._table.getWhereList(condition, variables, start, stop, 1)
        return np.asarray(found, dtype=np.int64)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        ahead, self._ahead, self._held = self._ahead, None, None
        where_ahead, self._where_ahead = self._where_ahead, None
        for pending in (ahead, where_ahead):
            if pending is not None:
                _settle(pending[1])  # never close the table under a running read
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        try:
            with self._call("closing the table"):
                self._table.close()
        except Exception:  # noqa: BLE001 - the session may be gone; OMERO then closes it
            log.warning("closing OriginalFile %s failed", self.info.file_id, exc_info=True)
        finally:
            self._session.release()


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _settle(future: Future) -> None:
    """Wait for a read ahead nobody wants any more; its result or error is dropped."""
    try:
        future.result()
    except Exception:  # noqa: BLE001 - the stream that wanted it has moved on or ended
        log.debug("an unused read ahead failed", exc_info=True)
