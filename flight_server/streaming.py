"""Tickets to record batches: validate a read, plan its endpoints, stream it chunk by chunk.

Memory stays bounded at any table size: a range read fetches ``chunk_size``
rows at a time, a row list is read ``chunk_size`` rows at a time, and a query
is evaluated over ``scan_rows`` rows at a time with the matches read in
``chunk_size`` pieces. The HDF5 lock is taken per chunk inside the handle, so
other streams interleave with this one. The next chunk is read while this one is sent.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np
import pyarrow as pa

from flight_protocol import columns as cols
from flight_protocol.messages import (
    ROW_NUMBER_COLUMN,
    FileTicket,
    RowRange,
    TableTicket,
    row_array,
)
from flight_server.backends.base import (
    TABLE_MIMETYPE,
    Backend,
    Caller,
    FileInfo,
    TableHandle,
    TableRef,
)
from flight_server.errors import InvalidArgument
from flight_server.query import CheckedQuery, check_query

#: Bytes per record batch a read streams by default (~1 MiB): the client copies each batch
#: into its final columns as it arrives, and gRPC holds a few messages while a read
#: streams, so smaller batches bound the client's peak (bench/results/client_memory.json:
#: 1M rows, 1.44x the DataFrame with ~4 MiB batches, 1.15x with ~1 MiB). OMERO calls are
#: sized on their own (backends/omero/tables.py).
TARGET_BATCH_BYTES = 1 << 20
#: Bytes of each column a batch holds at least (~32 KiB), up to MAX_BATCH_BYTES a batch:
#: every column of every batch costs the server and the client a few microseconds of
#: their own, so 1 MiB batches of a 100-column table (~1,300 rows, ~10 KiB a column)
#: spent more on that than on copying the values (bench/perf.py, the wide table).
MIN_COLUMN_BATCH_BYTES = 32 << 10
MAX_BATCH_BYTES = 8 << 20
#: Bytes read from the table at a time (a whole number of batches), then sent as batches
#: (see ``batch_bytes``) sliced from it without a copy: each read and conversion has a
#: fixed cost (~0.3 ms) that 1 MiB batches paid ten times per 10 MiB (bench/perf.py).
READ_BLOCK_BYTES = 4 << 20
MAX_CHUNK_ROWS = 1_000_000
SCAN_ROWS = 1_000_000
DEFAULT_FILE_CHUNK = 1 << 20
MAX_ENDPOINTS = 16
CSV_MIMETYPES = {"text/csv", "application/csv", "text/comma-separated-values"}

T = TypeVar("T")

ROW_FIELD = pa.field(ROW_NUMBER_COLUMN, pa.int64(), nullable=False)
FILE_SCHEMA = pa.schema([pa.field("data", pa.binary(), nullable=False)])


def ref_of(ticket: TableTicket | FileTicket) -> TableRef:
    return TableRef(file_id=ticket.file_id, annotation_id=ticket.annotation_id)


def row_width(schema: pa.Schema) -> int:
    """Rough bytes per row, to size batches."""
    width = 8
    for f in schema:
        kind = cols.column_type_of(f) if f.metadata else cols.LONG
        if kind == cols.STRING:
            width += (cols.string_size_of(f) or 16) + 4
        elif kind in cols.ARRAY_COLUMNS:
            width += 8 * f.type.list_size
        elif kind == cols.MASK:
            width += 64 + 256
        else:
            width += 8
    return width


def batch_bytes(schema: pa.Schema) -> int:
    """Bytes per batch for these columns: TARGET_BATCH_BYTES, or MIN_COLUMN_BATCH_BYTES a
    column for many columns, at most MAX_BATCH_BYTES."""
    return min(MAX_BATCH_BYTES, max(TARGET_BATCH_BYTES, len(schema) * MIN_COLUMN_BATCH_BYTES))


def default_chunk_rows(schema: pa.Schema) -> int:
    """Rows per batch when the ticket names no ``chunk_size``: :func:`batch_bytes` of rows."""
    return max(1, min(MAX_CHUNK_ROWS, batch_bytes(schema) // row_width(schema)))


def output_schema(table_schema: pa.Schema, names: list[str], row_numbers: bool) -> pa.Schema:
    fields = [table_schema.field(n) for n in names]
    return pa.schema(([ROW_FIELD] if row_numbers else []) + fields)


@dataclass
class TableRead:
    """A validated table read: what to send and how, over an open handle."""

    handle: TableHandle
    ticket: TableTicket
    names: list[str]
    schema: pa.Schema
    chunk_rows: int
    rows: np.ndarray | None = None  # an explicit row list
    start: int = 0
    stop: int = 0
    query: CheckedQuery | None = None

    @property
    def total_records(self) -> int:
        if self.query is not None:
            return -1
        if self.rows is not None:
            return len(self.rows)
        return self.stop - self.start

    def close(self) -> None:
        self.handle.close()


def _select_columns(schema: pa.Schema, wanted: tuple[str, ...] | None) -> list[str]:
    if wanted is None:
        return list(schema.names)
    present = set(schema.names)
    missing = [c for c in wanted if c not in present]
    if missing:
        raise InvalidArgument(
            f"column(s) {', '.join(repr(c) for c in missing)} not in this table; "
            f"its columns are {', '.join(repr(c) for c in schema.names)}"
        )
    chosen = set(wanted)
    return [n for n in schema.names if n in chosen]  # table order, as omero2pandas


def plan_read(backend: Backend, caller: Caller, ticket: TableTicket,
              handle: TableHandle | None = None) -> TableRead:
    """Open the table (or take ``handle``, opened for a signed ticket) and validate the
    ticket against it, closing it again on failure."""
    if handle is None:
        handle = backend.open_table(caller, ref_of(ticket))
    try:
        schema = handle.schema
        names = _select_columns(schema, ticket.columns)
        if not names and not ticket.row_numbers:
            raise InvalidArgument("no columns selected and row_numbers is false: nothing to send")
        out = output_schema(schema, names, ticket.row_numbers)
        chunk = ticket.chunk_size or default_chunk_rows(out)
        read = TableRead(handle, ticket, names, out, chunk, stop=handle.num_rows)
        n = handle.num_rows
        if isinstance(ticket.rows, RowRange):
            read.stop = n if ticket.rows.stop is None else min(ticket.rows.stop, n)
            read.start = min(ticket.rows.start, read.stop)
        elif ticket.rows is not None:
            rows = row_array(ticket.rows)
            beyond = rows[rows >= n]
            if len(beyond):
                raise InvalidArgument(
                    f"row {int(beyond[0])} is beyond the end of the table ({n} rows: 0..{n - 1})"
                )
            read.rows = rows
        elif ticket.query is not None:
            types = {f.name: cols.column_type_of(f) for f in schema}
            read.query = check_query(ticket.query, types, ticket.variables)
        return read
    except BaseException:
        handle.close()
        raise


def _with_row_numbers(read: TableRead, batch: pa.RecordBatch, rows: np.ndarray | range
                      ) -> pa.RecordBatch:
    """``batch`` in the read's schema, led by its row numbers ``rows`` when the ticket asks
    for them (a ``range`` becomes an array only then; a batch of no columns has no length
    of its own, so the count comes from ``rows``)."""
    arrays = list(batch.columns)
    if read.ticket.row_numbers:
        if isinstance(rows, range):
            rows = np.arange(rows.start, rows.stop, dtype=np.int64)
        arrays.insert(0, pa.array(rows, type=pa.int64()))
    return pa.RecordBatch.from_arrays(arrays, schema=read.schema)


def _block_rows(read: TableRead) -> int:
    """Rows read at a time: the whole batches that fit in READ_BLOCK_BYTES (at least one)."""
    one_batch = read.chunk_rows * row_width(read.schema)
    return read.chunk_rows * max(1, READ_BLOCK_BYTES // max(1, one_batch))


def _row_blocks(read: TableRead, rows: np.ndarray) -> Iterator[pa.RecordBatch]:
    step = _block_rows(read)
    for i in range(0, len(rows), step):
        part = rows[i:i + step]
        yield _with_row_numbers(read, read.handle.read_rows(read.names, part), part)


def batches(read: TableRead) -> Iterator[pa.RecordBatch]:
    """The read's record batches of ``chunk_rows`` rows; closes the handle when done.

    Blocks of several batches are read in a background thread while the one before is
    sent (:func:`one_ahead`), so reading the table and writing to the client overlap;
    each block is sent as zero-copy slices.
    """
    try:
        for block in one_ahead(_read_blocks(read)):
            for start in range(0, block.num_rows, read.chunk_rows):
                yield block.slice(start, read.chunk_rows)
    finally:
        read.close()


def _read_blocks(read: TableRead) -> Iterator[pa.RecordBatch]:
    if read.rows is not None:
        yield from _row_blocks(read, read.rows)
    elif read.query is not None:
        n = read.handle.num_rows
        scan = max(SCAN_ROWS, read.chunk_rows)
        for start in range(0, n, scan):
            found = read.handle.where(read.query, start, min(start + scan, n))
            yield from _row_blocks(read, found)
    else:
        read.handle.will_read(read.names, read.start, read.stop)
        step = _block_rows(read)
        for start in range(read.start, read.stop, step):
            stop = min(start + step, read.stop)
            batch = read.handle.read_range(read.names, start, stop)
            yield _with_row_numbers(read, batch, range(start, stop))


_END = object()


def one_ahead(items: Iterator[T]) -> Iterator[T]:
    """``items``, the next one computed in a background thread while this one is used.

    Only one ``next`` runs at a time. When the consumer stops early (an error, a client that
    went away), the running ``next`` is waited for and ``items`` is closed in the consumer's
    thread, so nothing still reads when this generator ends.
    """
    pool = ThreadPoolExecutor(1, thread_name_prefix="read-ahead")
    pending: Future | None = pool.submit(next, items, _END)
    try:
        while True:
            assert pending is not None
            item = pending.result()
            if item is _END:
                pending = None
                return
            pending = pool.submit(next, items, _END)
            yield item
    finally:
        if pending is not None:
            with contextlib.suppress(BaseException):
                pending.result()
        pool.shutdown(wait=True)
        close = getattr(items, "close", None)
        if close is not None:
            close()


def split_ticket(read: TableRead, split_rows: int) -> list[TableTicket]:
    """Endpoints for a read: plain range reads over ``split_rows`` rows are split in ranges."""
    ticket = read.ticket
    if read.query is not None or read.rows is not None:
        return [ticket]
    total = read.stop - read.start
    if total <= split_rows:
        return [replace(ticket, rows=RowRange(read.start, read.stop))]
    parts = min(MAX_ENDPOINTS, math.ceil(total / split_rows))
    per = math.ceil(total / parts)
    return [
        replace(ticket, rows=RowRange(s, min(s + per, read.stop)))
        for s in range(read.start, read.stop, per)
    ]


def rotated(replicas: list[str] | None, index: int) -> list[str]:
    """Endpoint ``index``'s locations: every replica, starting at a different one each time."""
    if not replicas:
        return []
    k = index % len(replicas)
    return replicas[k:] + replicas[:k]


def endpoint_metadata(ticket: TableTicket) -> bytes:
    """An endpoint's app_metadata: its row range (``{"start", "stop"}``) as JSON, if any."""
    if not isinstance(ticket.rows, RowRange):
        return b""
    return json.dumps({"start": ticket.rows.start, "stop": ticket.rows.stop}).encode()


def is_table_file(info: FileInfo) -> bool:
    return info.mimetype == TABLE_MIMETYPE


def is_csv_file(info: FileInfo) -> bool:
    """CSV or CSV.gz, by mimetype or by name."""
    name = info.name.lower()
    return info.mimetype.lower() in CSV_MIMETYPES or name.endswith((".csv", ".csv.gz"))


def check_file(info: FileInfo, ticket: FileTicket) -> None:
    """Refuse OMERO.tables files always, and non-CSV files when ``check_type`` is set."""
    if is_table_file(info):
        raise InvalidArgument(
            f"OriginalFile {info.file_id} ({info.name!r}) is an OMERO.table: "
            "read it with a table ticket (download_table / read_table)"
        )
    if ticket.check_type and not is_csv_file(info):
        raise InvalidArgument(
            f"OriginalFile {info.file_id} ({info.name!r}, {info.mimetype or 'no mimetype'}) "
            "is not a CSV or CSV.gz file; set check_type false to read it anyway"
        )


def file_batches(chunks: Iterator[bytes]) -> Iterator[pa.RecordBatch]:
    """Bytes chunks as one-column ``data`` batches."""
    for data in chunks:
        yield pa.RecordBatch.from_arrays([pa.array([data], type=pa.binary())],
                                         schema=FILE_SCHEMA)
