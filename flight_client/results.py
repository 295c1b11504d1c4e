"""One read, several consumers: :class:`ReadResult`.

:meth:`flight_client.connection.Connection.read` checks the selection and
returns a ``ReadResult``; nothing is sent until its plan or an output is asked
for. The plan (``get_flight_info``: schema, row count, endpoints with every
replica's location) is asked for once; the batches are then fetched once, into
one output: ``to_pandas``, ``to_arrow``, ``to_reader``, ``to_polars``,
``to_duckdb`` or ``to_file`` (as ADBC's cursor fetches into ``fetch_df``,
``fetch_arrow_table``, ...). :attr:`ReadResult.plan` gives the partitions for
distributed engines (:mod:`flight_client.partitions`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.flight as flight

from flight_client import assembly, errors, outputs
from flight_client.partitions import ReadPlan, plan_from_info
from flight_client.progress import bar
from flight_client.reading import MAX_PARALLEL_ENDPOINTS, ordered_batches
from flight_client.remote import write_tiledb
from flight_client.transport import Transport
from flight_protocol.messages import RowRange, TableTicket

LOGGER = logging.getLogger(__name__)


def frame_from_batches(schema: pa.Schema, batches: Iterator[pa.RecordBatch],
                       total_rows: int = -1) -> pd.DataFrame:
    """Where a read's batches become its DataFrame (index: the table's row numbers).

    The one place: every ``to_pandas`` goes through here, batches in table order.
    With the plan's ``total_rows`` (-1: unknown), each batch is copied into the final
    columns as it arrives and dropped (:mod:`flight_client.assembly`), so the peak
    stays near the DataFrame's own size.
    """
    return assembly.to_dataframe(schema, total_rows, batches)


def _conformed(batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The batches with the plan's schema (its metadata); a batch whose column names or
    types differ from the plan is the bridge's error, never cast into the plan's types."""
    expected = [(f.name, f.type) for f in schema]
    for batch in batches:
        if not batch.schema.equals(schema, check_metadata=True):
            got = [(f.name, f.type) for f in batch.schema]
            if got != expected:
                raise errors.ServerError(
                    "the bridge sent a batch whose columns "
                    f"({', '.join(f'{n}: {t}' for n, t in got)}) differ from the read's "
                    f"({', '.join(f'{n}: {t}' for n, t in expected)})")
            batch = pa.RecordBatch.from_arrays(batch.columns, schema=schema)
        yield batch


def _as_planned(batches: Iterator[pa.RecordBatch], planned: int) -> Iterator[pa.RecordBatch]:
    """The batches, checked against the plan's row count (ServerError past it or short)."""
    received = 0
    for batch in batches:
        received += batch.num_rows
        if received > planned:
            raise errors.ServerError(f"the bridge sent more than the {planned} rows it planned "
                                     "for this read")
        yield batch
    if received != planned:
        raise errors.ServerError(f"the bridge sent {received} rows of a read it planned as "
                                 f"{planned}")


def _counted(batches: Iterator[pa.RecordBatch], progress_bar: Any) -> Iterator[pa.RecordBatch]:
    try:
        for batch in batches:
            progress_bar.update(batch.num_rows)
            yield batch
    finally:
        progress_bar.close()


class ReadResult:
    """A checked read of one table: its plan, asked for once, and its rows, fetched once.

    ``transport`` may be a callable giving it, so that nothing connects before it
    is needed. ``progress`` shows a bar while the rows arrive (None: on a terminal
    or in a notebook). Each result gives one output; ask the connection again for
    another.
    """

    def __init__(self, transport: Transport | Callable[[], Transport], ticket: TableTicket, *,
                 progress: bool | None = None, tls_root_certs: bytes | None = None) -> None:
        self._get_transport = transport if callable(transport) else lambda: transport
        self._ticket = ticket
        self._progress = progress
        self._tls_root_certs = tls_root_certs
        self._info: flight.FlightInfo | None = None
        self._plan: ReadPlan | None = None
        self._consumed: str | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = f"consumed by {self._consumed}()" if self._consumed else "not read yet"
        return f"<ReadResult {self._what()}: {state}>"

    @property
    def _transport(self) -> Transport:
        """The connection's transport, opened (signed in) only when first needed."""
        return self._get_transport()

    def _what(self) -> str:
        t = self._ticket
        return f"file {t.file_id}" if t.file_id is not None else f"annotation {t.annotation_id}"

    # -- the plan ------------------------------------------------------------------------------
    @property
    def ticket(self) -> TableTicket:
        """The checked selection, as sent to the bridge."""
        return self._ticket

    @property
    def info(self) -> flight.FlightInfo:
        """The bridge's plan of the read (asked for once)."""
        if self._info is None:
            transport = self._transport
            self._info = transport.flight_info(transport.ticket_bytes(self._ticket))
        return self._info

    @property
    def schema(self) -> pa.Schema:
        """The columns the read returns (``__row__`` first when row numbers were asked for)."""
        return self.info.schema

    @property
    def num_rows(self) -> int:
        """Rows the read returns; -1 when the bridge cannot tell before reading (a query)."""
        return int(self.info.total_records)

    @property
    def endpoints(self) -> list[flight.FlightEndpoint]:
        """The parts of the read, each with its ticket and the replicas serving it."""
        return list(self.info.endpoints)

    @property
    def plan(self) -> ReadPlan:
        """The read's partitions for distributed engines (Dask, Ray); needs a signed-in
        connection, whose token the partitions carry."""
        if self._plan is None:
            self._plan = plan_from_info(self.info, self._transport, self._tls_root_certs)
        return self._plan

    # -- the rows ------------------------------------------------------------------------------
    def _open(self, output: str, parallel: int = MAX_PARALLEL_ENDPOINTS,
              desc: str = "Reading table", ticket: TableTicket | None = None
              ) -> tuple[pa.Schema, Iterator[pa.RecordBatch], int]:
        """Schema, batches and their row count (-1: unknown, a query), once.

        ``parallel=1`` fetches one endpoint at a time (the memory-bounded choice for
        streams and files). ``ticket`` reads the same rows another way (without row
        numbers): it is planned on its own, not cached as :attr:`info`.
        """
        with self._lock:  # one output per read, also when threads ask at once
            if self._consumed is not None:
                raise errors.InvalidRequest(
                    f"this read was already consumed by {self._consumed}(): call "
                    "Connection.read() again for another output")
            self._consumed = output
        try:
            return self._started(parallel, desc, ticket or self._ticket)
        except BaseException:
            self._consumed = None  # nothing was read: the result may be asked again
            raise

    def _started(self, parallel: int, desc: str, ticket: TableTicket
                 ) -> tuple[pa.Schema, Iterator[pa.RecordBatch], int]:
        transport = self._transport
        planned = -1
        if self._info is None and (ticket.query is not None or isinstance(ticket.rows, tuple)):
            # The bridge serves a query or a row list as one endpoint: ask for it directly
            # rather than have it plan (look up and open) the read twice.
            schema, stream = transport.open_stream(transport.ticket_bytes(ticket))
            total = len(ticket.rows) if isinstance(ticket.rows, tuple) else -1
            if total >= 0:  # a row list: exactly its rows (a row beyond the table is refused)
                planned = total
                stream = _as_planned(stream, total)
            LOGGER.info("reading table %s: %s rows", self._what(),
                        total if total >= 0 else "matching")
        else:
            info = self.info if ticket is self._ticket else transport.flight_info(
                transport.ticket_bytes(ticket))
            schema, total = info.schema, info.total_records
            LOGGER.info("reading table %s: %s rows in %d part(s)", self._what(), total,
                        len(info.endpoints))
            stream = ordered_batches(transport, list(info.endpoints), parallel)
            if total >= 0:
                planned = total
                stream = _as_planned(stream, total)
        progress_bar = bar(desc, total, "rows", self._progress)
        return schema, _counted(_conformed(stream, schema), progress_bar), planned

    def _range_start(self) -> int | None:
        """The first row of a read whose row numbers form a range (a whole table, or rows
        ``start`` to ``stop``), when they were asked for; else None."""
        t = self._ticket
        if not t.row_numbers or t.query is not None or isinstance(t.rows, tuple):
            return None
        return t.rows.start if isinstance(t.rows, RowRange) else 0

    def to_pandas(self) -> pd.DataFrame:
        """A DataFrame indexed by the table's row numbers (when the read carries them).

        For a range of rows (a whole table, a column subset, ``rows={start, stop}``) the
        row numbers are ``start, start + 1, ...``: the index is that ``pd.RangeIndex``,
        made here rather than sent (8 bytes a row less to send, copy and hold).
        """
        first = self._range_start()
        # Planned already (``info``, ``plan``): read as planned, row numbers and all.
        ticket = None if first is None or self._info is not None else dataclasses.replace(
            self._ticket, row_numbers=False)
        schema, batches, planned = self._open("to_pandas", ticket=ticket)
        df = frame_from_batches(schema, batches, planned)
        if first is not None:
            df.index = pd.RangeIndex(first, first + len(df))
        return df

    def to_arrow(self) -> pa.Table:
        """A ``pyarrow.Table``."""
        schema, batches, _ = self._open("to_arrow")
        return pa.Table.from_batches(list(batches), schema=schema)

    def to_reader(self) -> pa.RecordBatchReader:
        """A ``pyarrow.RecordBatchReader`` streaming one endpoint at a time."""
        schema, batches, _ = self._open("to_reader", parallel=1)
        return pa.RecordBatchReader.from_batches(schema, batches)

    def to_polars(self) -> Any:
        """A ``polars.DataFrame`` (needs the ``polars`` extra)."""
        outputs.require_module("polars", "polars")
        return outputs.to_polars(self.to_arrow())

    def to_duckdb(self, connection: Any = None, *, stream: bool = False) -> Any:
        """A DuckDB relation (needs the ``duckdb`` extra) on ``connection`` (default:
        DuckDB's default connection). ``stream=True`` scans the rows once, as they arrive."""
        outputs.require_module("duckdb", "duckdb")
        return outputs.to_duckdb(self.to_reader() if stream else self.to_arrow(), connection)

    def to_file(self, target_path: str | os.PathLike[str], format: str | None = None) -> int:
        """Write the rows to a new CSV, Parquet or TileDB file, batch by batch; the row count.

        ``format`` (``csv``, ``parquet``, ``tiledb``) defaults to the suffix, else CSV;
        see :func:`flight_client.download_table`. An existing target raises
        ``FileExistsError`` before anything is read.
        """
        fmt = outputs.file_format(target_path, format)
        outputs.check_target(target_path)
        schema, batches, _ = self._open("to_file", parallel=1, desc="Downloading table")
        if fmt == "tiledb":
            return write_tiledb(target_path, schema, batches, progress=False)[1]
        whole = self._ticket.rows is None and self._ticket.query is None
        return outputs.write_file(target_path, schema, batches, fmt, keep_row_numbers=not whole)
