"""A read's record batches into its final DataFrame as they arrive, one copy.

Every Flight message is one buffer holding all of a batch's columns, so an Arrow
table built from the received batches keeps every message alive until it is
converted, and ``pa.Table.to_pandas`` then copies it (strings stay zero-copy, so
they keep the messages alive for as long as the DataFrame lives): the client
peaked at about twice the DataFrame it returned.

:class:`Assembly` takes the read's schema and row count from its plan and, for
each batch as it arrives, copies each column out of the message into its final
place, then lets the batch go:

* numbers and booleans (and ``__row__``, the index) into numpy arrays
  preallocated for the whole read, at the batch's row range; an integer or
  boolean column that turns out to hold nulls (which ``to_pandas`` makes float64
  with NaN, or objects with None) goes on as compact copies of the rows received;
* strings, arrays, masks and anything else into a compact copy of the batch's
  column (its own buffers, not the message's), converted by Arrow column by
  column at the end, so the result is exactly what ``to_pandas`` gives (pandas'
  ``str`` dtype for strings, objects for arrays and masks). Strings are copied
  as ``large_string`` (the form pandas keeps, so the end converts nothing) into
  numpy-allocated buffers of their exact size: Arrow's allocator (mimalloc)
  rounds each block up to its size class, 6% more than the DataFrame at 10M rows.

When the row count is unknown (a query), every column is kept as compact copies
and converted column by column at the end, each column's copies dropped as soon
as it is converted. Batches may be added in any order with their first row
(``start``), e.g. from endpoints read in parallel (see :func:`endpoint_starts`);
without ``start`` they follow one another.

The DataFrame is identical to ``flight_client.outputs.to_pandas`` of the
concatenated batches: same columns, order, dtypes, values and index (the
table's row numbers, or a RangeIndex without them). Its columns are not
consolidated into 2-D blocks (as ``to_pandas(split_blocks=True)``): consolidating
would copy them all once more.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.flight as flight

from flight_client import errors, outputs
from flight_protocol.messages import ROW_NUMBER_COLUMN, ProtocolError, RowRange, TableTicket, decode

#: numpy's threshold for asking Linux for huge pages for an array (``madvise``): 4 MiB.
HUGE_PAGE_ARRAY_BYTES = 4 << 20


def _preallocatable(typ: pa.DataType) -> bool:
    """Types whose pandas column is a plain numpy array of the same dtype (without nulls)."""
    return pa.types.is_integer(typ) or pa.types.is_boolean(typ) or (
        pa.types.is_floating(typ) and not pa.types.is_float16(typ))


def _string_copy(array: pa.Array) -> pa.Array:
    """A ``string`` array as a ``large_string`` array in numpy-allocated buffers of its own."""
    n = len(array)
    if n == 0:
        return pa.array([], pa.large_string())
    validity, offsets_buf, data_buf = array.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32, count=n + 1)
    first, last = int(offsets[0]), int(offsets[-1])
    new_offsets = np.subtract(offsets, first, dtype=np.int64)
    data = np.frombuffer(data_buf, dtype=np.uint8, count=last - first, offset=first).copy() if (
        data_buf is not None and last > first) else np.zeros(1, dtype=np.uint8)
    bitmap = None
    if array.null_count and validity is not None:
        bitmap = pa.py_buffer(np.frombuffer(validity, dtype=np.uint8, count=(n + 7) // 8).copy())
    return pa.Array.from_buffers(pa.large_string(), n, [bitmap, pa.py_buffer(new_offsets),
                                                        pa.py_buffer(data)], array.null_count)


def compact(array: pa.Array) -> pa.Array:
    """A copy of ``array`` in buffers of its own (not slices of the Flight message)."""
    if pa.types.is_string(array.type) and array.offset == 0:
        return _string_copy(array)
    if pa.types.is_string(array.type):
        array = array.cast(pa.large_string())
    return pa.concat_arrays([array])


class _Preallocated:
    """One column as a numpy array of the read's length, filled batch by batch: its own, or
    ``values``, a row of a block shared with the other columns of its dtype."""

    def __init__(self, typ: pa.DataType, rows: int, values: np.ndarray | None = None) -> None:
        self.type = typ
        self.values = np.empty(rows, dtype=typ.to_pandas_dtype()) if values is None else values
        #: The row ranges written so far (the rest of ``values`` is untouched memory).
        self.written: list[tuple[int, int]] = []

    def changes_dtype(self, array: pa.Array) -> bool:
        """Whether ``array`` holds nulls that make the column another dtype (integers or
        booleans with nulls become float64 or objects in ``to_pandas``)."""
        return bool(array.null_count) and not pa.types.is_floating(self.type)

    def as_chunks(self) -> _Chunks:
        """The rows written so far as compact copies: converting the whole preallocated
        array would touch all of it, however few rows arrived (a bridge announcing a
        huge read and sending one row with a null would cost the whole column)."""
        chunks = _Chunks(self.type)
        for start, stop in self.written:
            chunks.put(start, pa.array(self.values[start:stop], type=self.type))
        return chunks

    def put(self, start: int, array: pa.Array) -> None:
        self.written.append((start, start + len(array)))
        if array.null_count:  # floats only (see changes_dtype): NaN, the same dtype
            part = np.asarray(array.to_pandas().array)
        else:
            part = array.to_numpy(zero_copy_only=False)
        self.values[start:start + len(part)] = part

    def result(self) -> Any:
        return self.values


class _Chunks:
    """One column as compact Arrow copies of each batch's part, converted at the end."""

    def __init__(self, typ: pa.DataType) -> None:
        self.type = pa.large_string() if pa.types.is_string(typ) else typ
        self.parts: list[tuple[int, pa.Array]] = []

    def put(self, start: int, array: pa.Array) -> None:
        self.parts.append((start, compact(array)))

    def result(self) -> Any:
        self.parts.sort(key=lambda part: part[0])
        column = pa.chunked_array([a for _, a in self.parts], type=self.type)
        self.parts = []
        series = column.to_pandas()
        del column
        values = series.array
        # A numpy-backed column as its (writable) ndarray; an extension array as it is.
        return values.to_numpy() if isinstance(values, pd.arrays.NumpyExtensionArray) else values


def _sinks(schema: pa.Schema, rows: int) -> list[_Preallocated | _Chunks]:
    """Each column's sink: preallocated for ``rows`` rows (-1: unknown) where its type
    allows, or compact copies, also when the plan's row count cannot be allocated (too
    large for this machine, or a bridge announcing absurd counts): those grow only with
    the rows that arrive, and ``finish`` checks the count.

    Columns under 4 MiB each share one ``(columns, rows)`` block per dtype: numpy asks
    for huge pages (``madvise``) only for arrays of 4 MiB or more, and filling a hundred
    small columns page by page cost 1.6x as long (bench/perf.py, the wide table). Larger
    columns get huge pages on their own, and in a block they raised the client's peak
    (1M narrow rows: 1.28x the DataFrame against 1.18x, bench/client_memory.py).
    """
    sinks: list[_Preallocated | _Chunks] = [_Chunks(f.type) for f in schema]
    if rows < 0:
        return sinks
    by_dtype: dict[np.dtype, list[int]] = {}
    for i, f in enumerate(schema):
        if _preallocatable(f.type):
            by_dtype.setdefault(np.dtype(f.type.to_pandas_dtype()), []).append(i)
    for dtype, members in by_dtype.items():
        shared = rows * dtype.itemsize < HUGE_PAGE_ARRAY_BYTES
        try:
            block = np.empty((len(members), rows), dtype=dtype) if shared else None
            for row, i in enumerate(members):
                sinks[i] = _Preallocated(schema.field(i).type, rows,
                                         None if block is None else block[row])
        except (MemoryError, ValueError):  # numpy: cannot allocate / larger than addressable
            for i in members:
                sinks[i] = _Chunks(schema.field(i).type)
    return sinks


def supported(schema: pa.Schema) -> bool:
    """Whether :class:`Assembly` gives what ``to_pandas`` gives for this schema.

    Not for pandas metadata (``to_pandas`` would restore an index or dtypes from
    it) or repeated column names; the bridge sends neither.
    """
    names = schema.names
    return not (schema.metadata and b"pandas" in schema.metadata) and (
        len(set(names)) == len(names))


class Assembly:
    """The DataFrame of one read, built as its batches arrive (see the module's docstring).

    ``total_rows`` is the plan's row count, or -1 when it is unknown. ``add``
    may be called from several threads.
    """

    def __init__(self, schema: pa.Schema, total_rows: int) -> None:
        if not supported(schema):
            raise ValueError("schema with pandas metadata or repeated column names")
        self.schema = schema
        self.total_rows = total_rows
        self._sinks = _sinks(schema, total_rows)
        self._next = 0
        self._received = 0
        self._lock = threading.Lock()

    def add(self, batch: pa.RecordBatch, start: int | None = None) -> None:
        """Copy ``batch`` into place: at row ``start`` of the result, or after the last one."""
        n = batch.num_rows
        with self._lock:
            at = self._next if start is None else start
            if self.total_rows >= 0 and (at < 0 or at + n > self.total_rows):
                raise errors.ServerError(
                    f"the bridge sent rows {at}..{at + n - 1} of a read it planned as "
                    f"{self.total_rows} rows")
            if n:
                for i, column in enumerate(batch.columns):
                    sink = self._sinks[i]
                    if isinstance(sink, _Preallocated) and sink.changes_dtype(column):
                        self._sinks[i] = sink = sink.as_chunks()
                    sink.put(at, column)
            self._next = at + n
            self._received += n

    def finish(self) -> pd.DataFrame:
        """The DataFrame; the assembly is empty afterwards."""
        if self.total_rows >= 0 and self._received != self.total_rows:
            raise errors.ServerError(f"the bridge sent {self._received} rows of a read it "
                                     f"planned as {self.total_rows}")
        index = None
        columns: dict[str, Any] = {}
        sinks, self._sinks = self._sinks, []
        for i, field in enumerate(self.schema):
            values = sinks[i].result()
            sinks[i] = None  # type: ignore[call-overload]  # its buffers go now
            if field.name == ROW_NUMBER_COLUMN:
                index = pd.Index(values, dtype="int64", copy=False)
            else:
                columns[field.name] = values
        df = pd.DataFrame(columns, index=index, copy=False)
        if not columns:
            df.columns = pd.Index([], dtype=object)  # as to_pandas of a table of no columns
        return df


def to_dataframe(schema: pa.Schema, total_rows: int,
                 batches: Iterable[pa.RecordBatch]) -> pd.DataFrame:
    """A read's batches (in row order) as its DataFrame, each batch dropped once copied."""
    if not supported(schema):
        return outputs.to_pandas(pa.Table.from_batches(list(batches), schema=schema))
    assembly = Assembly(schema, total_rows)
    for batch in batches:
        assembly.add(batch)
        del batch
    return assembly.finish()


def endpoint_starts(endpoints: Sequence[flight.FlightEndpoint]) -> list[int] | None:
    """Each endpoint's first row in the result, for endpoints read in any order.

    None when an endpoint's rows are not a known range (a query or a row list):
    its batches must then be added in order.
    """
    starts, at = [], 0
    for endpoint in endpoints:
        try:
            ticket = decode(endpoint.ticket.ticket, "ticket")
        except ProtocolError:
            return None
        if not isinstance(ticket, TableTicket) or not isinstance(ticket.rows, RowRange) or (
                ticket.rows.stop is None):
            return None
        starts.append(at)
        at += max(0, ticket.rows.stop - ticket.rows.start)
    return starts
