"""Reading OMERO.tables: one selection path shared by every read and download.

:func:`table_ticket` turns omero2pandas-style arguments into a
:class:`~flight_client.protocol.TableTicket` (checking them before any network
call); :func:`open_read` asks the bridge for the read's FlightInfo and streams
its endpoints, fetched in parallel by a small thread pool and yielded in
endpoint order. ``read_table``, ``read_arrow``, ``read_polars``,
``read_duckdb`` and ``download_table`` differ only in what they do with the
batches (see :mod:`flight_client.outputs`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.flight as flight

from flight_client import assembly, errors, outputs
from flight_client.connection import Connection, use_connection
from flight_client.progress import bar
from flight_client.protocol import (
    ACTION_LIST_TABLES,
    ACTION_TABLE_COLUMNS,
    ACTION_TABLE_SIZE,
    ROW_NUMBER_COLUMN,
    ProtocolError,
    RowRange,
    TableTicket,
    decode,
)
from flight_client.transport import Transport

LOGGER = logging.getLogger(__name__)

#: Endpoints fetched at the same time for in-memory reads, and batches buffered per
#: endpoint. Every open stream also holds gRPC buffers (tens of MiB for a fast
#: server), so streaming reads and downloads fetch one endpoint at a time and keep
#: memory flat; in-memory reads, which hold their result anyway, overlap two.
MAX_PARALLEL_ENDPOINTS = int(os.environ.get("OMERO_FLIGHT_PARALLEL_ENDPOINTS", "2"))
PREFETCH_BATCHES = 2


# -- selection ---------------------------------------------------------------------------------
def _row_selection(rows: Iterable[int] | None) -> RowRange | tuple[int, ...] | None:
    if rows is None:
        return None
    if isinstance(rows, range) and rows.step == 1 and rows.start >= 0:
        return RowRange(rows.start, max(rows.stop, rows.start))
    if isinstance(rows, str | bytes | int | float) or not isinstance(rows, Iterable):
        raise errors.InvalidRequest(
            f"rows must be an iterable of row numbers (e.g. a list or range), got {rows!r}"
        )
    out = []
    for r in rows:
        if isinstance(r, bool) or not isinstance(r, int | np.integer):
            raise errors.InvalidRequest(f"row numbers must be integers, got {r!r}")
        if r < 0:
            raise errors.InvalidRequest(f"row numbers must not be negative, got {r}")
        out.append(int(r))
    return tuple(out)


def _plain_variables(variables: Mapping[str, Any] | None) -> dict[str, Any]:
    """Plain values from Python values or omero rtypes (anything with ``getValue()``)."""
    if variables is None:
        return {}
    if not isinstance(variables, Mapping):
        raise errors.InvalidRequest("variables must be a dict mapping names to values")
    out: dict[str, Any] = {}
    for name, value in variables.items():
        if hasattr(value, "getValue"):
            value = value.getValue()
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bytes):
            value = value.decode()
        if not isinstance(value, bool | int | float | str):
            raise errors.InvalidRequest(
                f"variable {name!r}: expected a number, a boolean or a column name (str), "
                f"got {type(value).__name__}"
            )
        out[str(name)] = value
    return out


def _column_selection(column_names: Iterable[str] | str | None) -> tuple[str, ...] | None:
    if column_names is None:
        return None
    if isinstance(column_names, str):
        return (column_names,)
    names = tuple(column_names)
    for name in names:
        if not isinstance(name, str):
            raise errors.InvalidRequest(f"column names must be strings, got {name!r}")
    return names or None


def _object_id(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise errors.InvalidRequest(f"{what} must be an integer, got {value!r}")
    return int(value)


def object_ids(file_id: Any, annotation_id: Any) -> tuple[int | None, int | None]:
    """Check a (file_id, annotation_id) pair as omero2pandas does: exactly one is needed."""
    fid, aid = _object_id(file_id, "file_id"), _object_id(annotation_id, "annotation_id")
    if fid is not None and aid is not None:
        raise errors.InvalidRequest("supply either a file_id or an annotation_id, not both")
    if fid is None and aid is None:
        raise errors.InvalidRequest("a file_id or an annotation_id must be supplied")
    return fid, aid


def table_ticket(
    file_id: Any = None,
    annotation_id: Any = None,
    column_names: Iterable[str] | str | None = (),
    rows: Iterable[int] | None = None,
    query: str | None = None,
    variables: Mapping[str, Any] | None = None,
    chunk_size: int | None = None,
    row_numbers: bool = True,
) -> TableTicket:
    """The ticket for a read, checked before anything is sent."""
    if rows is not None and query is not None:
        raise errors.InvalidRequest("a query selects rows itself: supply rows or query, not both")
    fid, aid = object_ids(file_id, annotation_id)
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size <= 0):
        raise errors.InvalidRequest(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if query is not None and not isinstance(query, str):
        raise errors.InvalidRequest(f"query must be a string, got {type(query).__name__}")
    try:
        return TableTicket(
            file_id=fid,
            annotation_id=aid,
            columns=_column_selection(column_names),
            rows=_row_selection(rows),
            query=query,
            variables=_plain_variables(variables),
            chunk_size=chunk_size,
            row_numbers=row_numbers,
        )
    except ProtocolError as exc:
        raise errors.InvalidRequest(str(exc)) from None


# -- streaming ---------------------------------------------------------------------------------
def endpoint_locations(endpoint: flight.FlightEndpoint) -> list[str | None]:
    """An endpoint's locations in the bridge's order (``[None]``: the server asked)."""
    return [loc.uri.decode() for loc in endpoint.locations] or [None]


def resume_ticket(ticket: bytes, received: int) -> bytes | None:
    """The ticket for what is left of a read after ``received`` rows, None if it cannot resume.

    A row range resumes after the rows received; any read resumes from the start when
    nothing was received yet.
    """
    if received == 0:
        return ticket
    request = decode(ticket, "ticket")
    if not isinstance(request, TableTicket) or not isinstance(request.rows, RowRange):
        return None
    return replace(request, rows=RowRange(request.rows.start + received,
                                          request.rows.stop)).encode()


def _unavailable(err: errors.OmeroFlightError) -> bool:
    """A replica that cannot serve now (down, unreachable, stopping, cut off): try another."""
    return isinstance(err, errors.ConnectionFailed | errors.ServerBusy) or (
        type(err) is errors.ServerError and err.code is None)


def failover_batches(transport: Transport, ticket: bytes, locations: list[str | None],
                     avoid: set[str] | None = None) -> Iterator[pa.RecordBatch]:
    """One endpoint's batches, trying its locations in order (as ADBC does).

    A location that is unavailable, when the stream opens or in its middle, hands
    the read to the next one; a row range resumes after the rows already received.
    ``avoid`` (shared by one read's endpoints) moves locations that failed to the end.
    """
    avoid = set() if avoid is None else avoid
    ordered = sorted(locations, key=lambda loc: transport.resolve(loc) in avoid)
    remaining: bytes | None = ticket
    received = 0
    for i, location in enumerate(ordered):
        try:
            for batch in transport.stream(remaining, location):
                received += batch.num_rows
                yield batch
            return
        except errors.OmeroFlightError as err:
            if not _unavailable(err) or i == len(ordered) - 1:
                raise
            remaining = resume_ticket(ticket, received)
            if remaining is None:
                raise
            avoid.add(transport.resolve(location))
            LOGGER.warning("replica %s failed after %d rows (%s); reading on from %s",
                           transport.resolve(location), received, err,
                           transport.resolve(ordered[i + 1]))


def _endpoint_batches(transport: Transport, endpoint: flight.FlightEndpoint,
                      avoid: set[str] | None = None) -> Iterator[Any]:
    return failover_batches(transport, endpoint.ticket.ticket, endpoint_locations(endpoint),
                            avoid)


def _put(q: queue.Queue, item: tuple[str, Any], stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _fetch_into(transport: Transport, endpoint: flight.FlightEndpoint, q: queue.Queue,
                stop: threading.Event, avoid: set[str]) -> None:
    if stop.is_set():
        return
    stream = _endpoint_batches(transport, endpoint, avoid)
    try:
        for batch in stream:
            if not _put(q, ("batch", batch), stop):
                return
        _put(q, ("done", None), stop)
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
        _put(q, ("error", exc), stop)
    finally:
        stream.close()


def ordered_batches(transport: Transport, endpoints: list[flight.FlightEndpoint],
                    parallel: int = MAX_PARALLEL_ENDPOINTS) -> Iterator[pa.RecordBatch]:
    """Batches of all endpoints in endpoint order; up to ``parallel`` endpoints at once."""
    avoid: set[str] = set()
    if len(endpoints) <= 1 or parallel <= 1:
        for endpoint in endpoints:
            yield from _endpoint_batches(transport, endpoint, avoid)
        return
    stop = threading.Event()
    queues: list[queue.Queue] = [queue.Queue(maxsize=PREFETCH_BATCHES) for _ in endpoints]
    workers = min(parallel, len(endpoints))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="omero-flight-get") as pool:
        futures = [pool.submit(_fetch_into, transport, ep, q, stop, avoid)
                   for ep, q in zip(endpoints, queues, strict=True)]
        try:
            for q in queues:
                while True:
                    kind, item = q.get()
                    if kind == "done":
                        break
                    if kind == "error":
                        raise item
                    yield item
        finally:
            stop.set()
            for future in futures:
                future.cancel()


@dataclass
class TableRead:
    """An opened read: its schema, its row count (-1 if unknown) and its batches."""

    schema: pa.Schema
    total_rows: int
    batches: Iterator[pa.RecordBatch]


def _conformed(batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        if not batch.schema.equals(schema, check_metadata=True):
            batch = pa.RecordBatch.from_arrays(batch.columns, schema=schema)
        yield batch


def _counted(batches: Iterator[pa.RecordBatch], progress_bar: Any) -> Iterator[pa.RecordBatch]:
    try:
        for batch in batches:
            progress_bar.update(batch.num_rows)
            yield batch
    finally:
        progress_bar.close()


def open_read(conn: Connection, ticket: TableTicket, progress: bool | None = None,
              desc: str = "Reading table", parallel: int = MAX_PARALLEL_ENDPOINTS) -> TableRead:
    """Ask for the read's FlightInfo; batches are fetched as they are consumed.

    ``parallel=1`` fetches the endpoints one after another: the memory-bounded
    choice for streams and downloads.
    """
    transport = conn.transport
    what = f"file {ticket.file_id}" if ticket.file_id is not None else (
        f"annotation {ticket.annotation_id}")
    if ticket.query is not None or isinstance(ticket.rows, tuple):
        # The bridge serves a query or a row list as one endpoint: ask for it directly
        # rather than have it plan (look up and open) the read twice.
        schema, stream = transport.open_stream(ticket.encode())
        total = len(ticket.rows) if isinstance(ticket.rows, tuple) else -1
        LOGGER.info("reading table %s: %s rows", what, total if total >= 0 else "matching")
    else:
        info = transport.flight_info(ticket.encode())
        schema, total = info.schema, info.total_records
        LOGGER.info("reading table %s: %s rows in %d part(s)", what, total,
                    len(info.endpoints))
        stream = ordered_batches(transport, list(info.endpoints), parallel)
    progress_bar = bar(desc, total, "rows", progress)
    return TableRead(schema, total, _counted(_conformed(stream, schema), progress_bar))


def _read_table_data(ticket: TableTicket, connect: dict[str, Any],
                     progress: bool | None) -> pa.Table:
    with use_connection(**connect) as conn:
        read = open_read(conn, ticket, progress)
        return pa.Table.from_batches(list(read.batches), schema=read.schema)


def _connect_args(omero_connector: Any, server: Any, port: Any, username: Any,
                  password: Any) -> dict[str, Any]:
    return {"omero_connector": omero_connector, "server": server, "port": port,
            "username": username, "password": password}


# -- public functions --------------------------------------------------------------------------
def read_table(
    file_id: int | None = None,
    annotation_id: int | None = None,
    column_names: Iterable[str] = (),
    rows: Iterable[int] | None = None,
    chunk_size: int | None = None,
    omero_connector: Any = None,
    server: str | None = None,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
    query: str | None = None,
    variables: Mapping[str, Any] | None = None,
    *,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Read a table (or the selected columns and rows) into a DataFrame.

    The index holds the table's own row numbers. ``rows`` is any iterable of
    row numbers (a ``range`` is sent compactly); ``query`` is a PyTables
    condition with ``variables`` (plain values or omero rtypes; a string names
    a column). ``chunk_size`` is rows per batch (default: the bridge chooses).
    """
    ticket = table_ticket(file_id, annotation_id, column_names, rows, query, variables,
                          chunk_size)
    with use_connection(omero_connector, server, port, username, password) as conn:
        read = open_read(conn, ticket, progress)
        return assembly.to_dataframe(read.schema, read.total_rows, read.batches)


def read_arrow(
    file_id: int | None = None,
    annotation_id: int | None = None,
    column_names: Iterable[str] = (),
    rows: Iterable[int] | None = None,
    chunk_size: int | None = None,
    omero_connector: Any = None,
    server: str | None = None,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
    query: str | None = None,
    variables: Mapping[str, Any] | None = None,
    *,
    stream: bool = False,
    row_numbers: bool = False,
    progress: bool | None = None,
) -> pa.Table | pa.RecordBatchReader:
    """Read a table as a ``pyarrow.Table``, or a ``RecordBatchReader`` with ``stream=True``.

    ``row_numbers=True`` adds the table's row numbers as the first column,
    ``__row__``. A streaming reader keeps its connection open until it is
    exhausted or closed.
    """
    ticket = table_ticket(file_id, annotation_id, column_names, rows, query, variables,
                          chunk_size, row_numbers=row_numbers)
    connect = _connect_args(omero_connector, server, port, username, password)
    if not stream:
        return _read_table_data(ticket, connect, progress)
    stack = ExitStack()
    try:
        conn = stack.enter_context(use_connection(**connect))
        read = open_read(conn, ticket, progress, parallel=1)
    except BaseException:
        stack.close()
        raise

    def batches() -> Iterator[pa.RecordBatch]:
        with stack:
            yield from read.batches

    return pa.RecordBatchReader.from_batches(read.schema, batches())


def read_polars(
    file_id: int | None = None,
    annotation_id: int | None = None,
    column_names: Iterable[str] = (),
    rows: Iterable[int] | None = None,
    chunk_size: int | None = None,
    omero_connector: Any = None,
    server: str | None = None,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
    query: str | None = None,
    variables: Mapping[str, Any] | None = None,
    *,
    row_numbers: bool = False,
    progress: bool | None = None,
) -> Any:
    """Read a table into a ``polars.DataFrame`` (needs the ``polars`` extra)."""
    outputs.require_module("polars", "polars")
    table = read_arrow(file_id, annotation_id, column_names, rows, chunk_size, omero_connector,
                       server, port, username, password, query, variables,
                       row_numbers=row_numbers, progress=progress)
    return outputs.to_polars(table)


def read_duckdb(
    file_id: int | None = None,
    annotation_id: int | None = None,
    column_names: Iterable[str] = (),
    rows: Iterable[int] | None = None,
    chunk_size: int | None = None,
    omero_connector: Any = None,
    server: str | None = None,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
    query: str | None = None,
    variables: Mapping[str, Any] | None = None,
    *,
    connection: Any = None,
    row_numbers: bool = False,
    stream: bool = False,
    progress: bool | None = None,
) -> Any:
    """Read a table into a DuckDB relation (needs the ``duckdb`` extra).

    ``connection`` is the DuckDB connection to create it on (default: DuckDB's
    default connection). By default the table is read into memory (Arrow) and
    the relation can be queried any number of times. ``stream=True`` gives a
    relation over the streaming read instead: DuckDB consumes batches as they
    arrive, so memory stays bounded, but the relation can be scanned only once.
    """
    outputs.require_module("duckdb", "duckdb")
    data = read_arrow(file_id, annotation_id, column_names, rows, chunk_size, omero_connector,
                      server, port, username, password, query, variables,
                      stream=stream, row_numbers=row_numbers, progress=progress)
    return outputs.to_duckdb(data, connection)


def scan_polars(
    file_id: int | None = None,
    annotation_id: int | None = None,
    column_names: Iterable[str] = (),
    rows: Iterable[int] | None = None,
    chunk_size: int | None = None,
    omero_connector: Any = None,
    server: str | None = None,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
    query: str | None = None,
    variables: Mapping[str, Any] | None = None,
    *,
    row_numbers: bool = False,
    progress: bool | None = None,
) -> Any:
    """A lazy ``polars.LazyFrame`` over a table (needs the ``polars`` extra).

    Only the schema is fetched now (a missing table, column or permission
    raises here, typed); rows are read at ``collect()`` (or ``sink_*``). Each
    collect streams the table again, asking the bridge only for the columns
    the query uses, filtering each batch as it arrives and stopping after
    ``head(n)``. Memory then holds one batch plus what the query keeps (e.g.
    an aggregate). An error during a collect reaches you as Polars wraps it
    (``polars.exceptions.ComputeError`` with the original message).
    """
    outputs.require_module("polars", "polars")
    selected = list(_column_selection(column_names) or ())
    if rows is not None and not isinstance(rows, range):
        rows = list(rows)  # read again at every collect
    base = table_ticket(file_id, annotation_id, selected, rows, query, variables, chunk_size,
                        row_numbers=row_numbers)
    connect = _connect_args(omero_connector, server, port, username, password)

    # The schema is asked for now (no rows are read), so that a missing table, column or
    # permission is a typed error here: Polars would wrap it in a ComputeError at collect.
    plain = table_ticket(file_id, annotation_id, selected, row_numbers=row_numbers)
    with use_connection(**connect) as conn:
        schema = conn.transport.flight_info(plain.encode()).schema

    def open_reader(columns: list[str] | None) -> pa.RecordBatchReader:
        wanted = selected if columns is None else [c for c in columns
                                                   if c != ROW_NUMBER_COLUMN] or selected
        return read_arrow(base.file_id, base.annotation_id, wanted, rows, chunk_size,
                          omero_connector, server, port, username, password, query,
                          variables, stream=True, row_numbers=row_numbers, progress=progress)

    return outputs.lazy_polars(lambda: schema, open_reader, "omero-flight table")


def download_table(
    target_path: str | os.PathLike[str],
    file_id: int | None = None,
    annotation_id: int | None = None,
    column_names: Iterable[str] = (),
    rows: Iterable[int] | None = None,
    chunk_size: int | None = None,
    omero_connector: Any = None,
    server: str | None = None,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
    query: str | None = None,
    variables: Mapping[str, Any] | None = None,
    *,
    format: str | None = None,
    progress: bool | None = None,
) -> int:
    """Write a table to a new CSV, Parquet or TileDB target, batch by batch; returns the row count.

    CSV (the default) is byte for byte the file omero2pandas writes (header,
    row numbers as first, unnamed column, pandas' float, boolean and NaN
    formatting and quoting). Parquet is chosen by ``format="parquet"`` or a
    ``.parquet`` suffix; it keeps each column's OMERO type (``omero.column_type``
    field metadata), and pandas reads the row numbers back as the index (a
    selection stores them in a ``__row__`` column; a whole table stores none). ``format="tiledb"``
    or a ``.tiledb`` suffix writes a TileDB array in OMERO Plus's layout
    (``tiledb`` extra; rows renumbered from 0, see
    :func:`flight_client.remote.write_tiledb`). An existing target raises
    ``FileExistsError`` before anything is read.
    """
    fmt = outputs.file_format(target_path, format)
    ticket = table_ticket(file_id, annotation_id, column_names, rows, query, variables,
                          chunk_size)
    outputs.check_target(target_path)
    with use_connection(omero_connector, server, port, username, password) as conn:
        read = open_read(conn, ticket, progress, desc="Downloading table", parallel=1)
        if fmt == "tiledb":
            from flight_client.remote import write_tiledb

            return write_tiledb(target_path, read.schema, read.batches, progress=False)[1]
        whole = ticket.rows is None and ticket.query is None
        return outputs.write_file(target_path, read.schema, read.batches, fmt,
                                  keep_row_numbers=not whole)


def column_details(conn: Connection, file_id: Any = None,
                   annotation_id: Any = None) -> list[dict[str, Any]]:
    """``[{"name", "type", "description"}, ...]`` for each column of a table."""
    ticket = table_ticket(file_id, annotation_id)
    result = conn.transport.action(ACTION_TABLE_COLUMNS, **ticket.to_json())
    return list(result.get("columns", []))


def get_table_columns(
    file_id: int | None = None,
    annotation_id: int | None = None,
    omero_connector: Any = None,
    server: str | None = None,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
) -> list[str]:
    """The table's column names, in order."""
    object_ids(file_id, annotation_id)
    with use_connection(omero_connector, server, port, username, password) as conn:
        return [c["name"] for c in column_details(conn, file_id, annotation_id)]


def get_table_size(
    file_id: int | None = None,
    annotation_id: int | None = None,
    omero_connector: Any = None,
    server: str | None = None,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
) -> tuple[int, int]:
    """``(rows, columns)`` of a table."""
    ticket = table_ticket(file_id, annotation_id)
    with use_connection(omero_connector, server, port, username, password) as conn:
        result = conn.transport.action(ACTION_TABLE_SIZE, **ticket.to_json())
    return int(result["rows"]), int(result["columns"])


def list_tables(
    object_type: str | None = None,
    object_id: int | None = None,
    omero_connector: Any = None,
    server: str | None = None,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
) -> list[dict[str, Any]]:
    """Tables linked to an object (e.g. ``"Image", 1``), or with no object all you can read.

    Each entry has ``file_id``, ``annotation_id``, ``name``, ``owner``,
    ``group``, ``links`` and ``rows``.
    """
    if (object_type is None) != (object_id is None):
        raise errors.InvalidRequest("give both object_type and object_id, or neither")
    body: dict[str, Any] = {}
    if object_type is not None:
        body = {"object_type": object_type, "object_id": _object_id(object_id, "object_id")}
    with use_connection(omero_connector, server, port, username, password) as conn:
        result = conn.transport.action(ACTION_LIST_TABLES, **body)
    return list(result.get("tables", []))
