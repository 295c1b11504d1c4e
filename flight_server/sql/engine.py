"""Run one SQL statement with DuckDB over the bridge's own table reads, sandboxed.

Why DuckDB: it is already an extra of this project, runs in-process, scans Arrow
streams through the C stream interface (asking for a fresh stream each time a
plan scans a table again), and has what a sandbox needs: external access
(files, network, ``ATTACH`` of files), extension install and autoload can be
switched off and the configuration locked; each connection has its own memory
limit and thread count, and ``interrupt()`` cancels a running statement from a
timer. Its own parser (``json_serialize_sql``) hands :mod:`.plan` the parse tree
to find tables, columns and predicates. DataFusion would fit as well (Arrow
native, no file access unless registered), but it would be a second engine and
a large new dependency for the same result.

Each statement gets its own in-memory database (catalog ``omero``, schema
``main``), closed when its results are sent. Each table it names is a view over
a :class:`TableSource`: every scan is ``streaming.plan_read`` + ``batches`` run as
the caller through the backend, with the statement's projection and pushed-down
condition in the ticket, so the backend decides what the user sees and
``query.check_query`` checks the condition like any other query.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

import duckdb
import pyarrow as pa

from flight_protocol import columns as cols
from flight_protocol.messages import RowRange, TableTicket
from flight_server import streaming
from flight_server.backends.base import Backend, Caller, TableRef
from flight_server.errors import BridgeError, InvalidArgument, PermissionDenied
from flight_server.query import UnsafeQuery, check_query
from flight_server.sql import catalog, plan

log = logging.getLogger(__name__)

MAX_TABLES = 32

Parameter = bool | int | float | str | None


@dataclass(frozen=True)
class Limits:
    """Per-statement limits; :meth:`from_env` reads ``OMERO_FLIGHT_SQL_*`` overrides."""

    memory_limit: str = "1GB"
    threads: int = 2
    timeout: float = 300.0  # seconds, from the start of the statement to its last batch
    batch_rows: int = 65_536

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        """``OMERO_FLIGHT_SQL_MEMORY`` (e.g. 2GB), ``_THREADS``, ``_TIMEOUT`` (seconds)."""
        env = os.environ if env is None else env
        limits = cls()
        try:
            if env.get("OMERO_FLIGHT_SQL_MEMORY"):
                memory = env["OMERO_FLIGHT_SQL_MEMORY"].strip()
                if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", memory, re.IGNORECASE):
                    raise ValueError(f"OMERO_FLIGHT_SQL_MEMORY={memory!r}: use e.g. 512MB, 2GB")
                limits = replace(limits, memory_limit=memory)
            if env.get("OMERO_FLIGHT_SQL_THREADS"):
                limits = replace(limits, threads=max(1, int(env["OMERO_FLIGHT_SQL_THREADS"])))
            if env.get("OMERO_FLIGHT_SQL_TIMEOUT"):
                timeout = float(env["OMERO_FLIGHT_SQL_TIMEOUT"])
                if not timeout > 0:
                    raise ValueError("OMERO_FLIGHT_SQL_TIMEOUT must be a positive number")
                limits = replace(limits, timeout=timeout)
        except ValueError as exc:
            raise ValueError(f"bad Flight SQL limit: {exc}") from None
        return limits


@dataclass
class Report:
    """What one statement read: rows delivered by each table's backend reads."""

    user: str
    sql: str
    rows_read: dict[str, int] = field(default_factory=dict)
    columns: dict[str, tuple[str, ...] | None] = field(default_factory=dict)
    conditions: dict[str, str] = field(default_factory=dict)
    rows_out: int = 0
    seconds: float = 0.0

    @property
    def total_rows_read(self) -> int:
        return sum(self.rows_read.values())


def connect(limits: Limits) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB with no file, network or extension access, config locked."""
    con = duckdb.connect(":memory:", config={
        "enable_external_access": False,
        "autoload_known_extensions": False,
        "autoinstall_known_extensions": False,
        "allow_community_extensions": False,
        "memory_limit": limits.memory_limit,
        "threads": max(1, limits.threads),
    })
    try:
        con.execute("SET enable_progress_bar = false")
        con.execute("SET python_enable_replacements = false")  # no Python variables as tables
        con.execute(f"ATTACH ':memory:' AS {catalog.CATALOG}")
        con.execute(f"USE {catalog.CATALOG}")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


class TableSource:
    """One table as DuckDB sees it: each scan is a new read of the table as the caller."""

    def __init__(self, backend: Backend, caller: Caller, ticket: TableTicket,
                 schema: pa.Schema, report: Report, name: str) -> None:
        self.backend, self.caller, self.ticket = backend, caller, ticket
        self.schema, self.report, self.name = schema, report, name
        self.error: BaseException | None = None

    def __arrow_c_schema__(self) -> object:
        return self.schema.__arrow_c_schema__()

    def __arrow_c_stream__(self, requested_schema: object = None) -> object:
        try:
            read = streaming.plan_read(self.backend, self.caller, self.ticket)
        except BaseException as exc:
            self.error = exc
            raise
        reader = pa.RecordBatchReader.from_batches(read.schema, self._counted(read))
        return reader.__arrow_c_stream__(requested_schema)

    def _counted(self, read: streaming.TableRead) -> Iterator[pa.RecordBatch]:
        try:
            for batch in streaming.batches(read):
                self.report.rows_read[self.name] += batch.num_rows
                yield batch
        except BaseException as exc:
            self.error = exc
            raise


@dataclass
class Planned:
    """A statement checked against the caller's tables, ready to describe or run."""

    sql: str
    tickets: dict[str, TableTicket]
    schemas: dict[str, pa.Schema]  # each table's read schema (projection applied)
    splittable: tuple[str, int] | None = None  # (table, rows) when it may run on row ranges
    parameters: int = 0  # how many parameters the statement takes
    values: tuple[Parameter, ...] = ()  # the values bound to them

    def bound(self) -> list[Parameter] | None:
        """The parameter values to run with (NULLs when only describing)."""
        if not self.parameters:
            return None
        if self.values:
            return list(self.values)
        return [None] * self.parameters


@functools.cache
def scalar_functions() -> frozenset[str]:
    """The engine's scalar function (and operator) names."""
    con = duckdb.connect(":memory:", config={"enable_external_access": False})
    try:
        rows = con.execute("SELECT DISTINCT lower(function_name) FROM duckdb_functions() "
                           "WHERE function_type = 'scalar'").fetchall()
    finally:
        con.close()
    return frozenset(r[0] for r in rows)


def _ticket(ref: TableRef, columns: tuple[str, ...] | None,
            condition: tuple[str, dict[str, str]] | None) -> TableTicket:
    query, variables = condition if condition else (None, {})
    return TableTicket(file_id=ref.file_id, annotation_id=ref.annotation_id, columns=columns,
                       query=query, variables=variables, row_numbers=columns == ())


def plan_statement(backend: Backend, caller: Caller, sql: str, limits: Limits,
                   pushdown: bool = True, row_range: tuple[int, int] | None = None,
                   values: tuple[Parameter, ...] = ()) -> Planned:
    """Parse, resolve every table as the caller, choose projections and pushed conditions.

    ``row_range`` runs a row-by-row statement on those rows of its table only (one
    endpoint of a split result). ``pushdown=False`` reads every column and row of every
    table (for comparison only).
    """
    if not isinstance(sql, str) or not sql.strip():
        raise InvalidArgument("the SQL statement is empty")
    con = connect(limits)
    try:
        analysis = plan.analyse(plan.parse(con, sql), scalar_functions(), values)
    finally:
        con.close()
    if row_range is not None and analysis.row_wise is None:
        raise InvalidArgument("this statement cannot run on a row range")
    if values and len(values) != analysis.parameters:
        raise InvalidArgument(f"the statement takes {analysis.parameters} parameter(s), "
                              f"{len(values)} were bound")
    if len(analysis.tables) > MAX_TABLES:
        raise InvalidArgument(f"a statement may name at most {MAX_TABLES} tables")
    refs = {name: catalog.resolve(backend, caller, name) for name in analysis.tables}
    full: dict[str, pa.Schema] = {}
    sizes: dict[str, int] = {}
    for name, ref in refs.items():
        with backend.open_table(caller, ref) as handle:
            full[name], sizes[name] = handle.schema, handle.num_rows
    tickets, schemas = {}, {}
    splittable = None
    for name, ref in refs.items():
        columns = plan.projection(analysis, full[name]) if pushdown else None
        condition = plan.conditions(analysis, name, full) if pushdown else None
        if name == analysis.row_wise and row_range is not None:
            condition = None  # a ticket takes a row range or a condition, not both
        ticket = _ticket(ref, columns, condition)
        if name == analysis.row_wise and condition is None:
            splittable = (name, sizes[name])
            if row_range is not None:
                ticket = replace(ticket, rows=RowRange(*row_range))
        if ticket.query is not None:  # refused now rather than mid-statement
            check_query(ticket.query, {f.name: cols.column_type_of(f) for f in full[name]},
                        ticket.variables)
        names = list(full[name].names if columns is None else columns)
        tickets[name] = ticket
        schemas[name] = streaming.output_schema(full[name], names, ticket.row_numbers)
    return Planned(sql, tickets, schemas, splittable, analysis.parameters, tuple(values))


def _register(con: duckdb.DuckDBPyConnection, name: str, source: object) -> None:
    hidden = f"__source_{name}"
    con.register(hidden, source)
    con.execute(f'CREATE VIEW {catalog.CATALOG}.{catalog.DB_SCHEMA}."{name}" '
                f'AS SELECT * FROM "{hidden}"')


def describe(planned: Planned, limits: Limits) -> pa.Schema:
    """The result schema, from running the statement over empty tables of the same schemas."""
    con = connect(limits)
    timer = threading.Timer(limits.timeout, con.interrupt)
    timer.daemon = True
    try:
        for name, schema in planned.schemas.items():
            _register(con, name, schema.empty_table())
        timer.start()
        with translated(None, limits):
            # The reader's schema, as Execution serves it: a LIMIT 0 wrapper would rename
            # duplicate columns (a self-join's ``a`` and ``a`` to ``a`` and ``a_1``).
            relation = con.sql(planned.sql, params=planned.bound())
            return relation.to_arrow_reader(limits.batch_rows).schema
    finally:
        timer.cancel()
        con.close()


class Execution:
    """A running statement: its result batches, its timer, its report."""

    def __init__(self, backend: Backend, caller: Caller, planned: Planned, limits: Limits,
                 report: Report) -> None:
        if planned.parameters and not planned.values:
            raise InvalidArgument(f"the statement takes {planned.parameters} parameter(s): "
                                  "bind values to run it")
        self.limits, self.report = limits, report
        self.timed_out = threading.Event()
        self.started = time.monotonic()
        self.con = connect(limits)
        self.sources: list[TableSource] = []
        self.timer = threading.Timer(limits.timeout, self._interrupt)
        self.timer.daemon = True
        try:
            for name, ticket in planned.tickets.items():
                report.rows_read[name] = 0
                report.columns[name] = ticket.columns
                if ticket.query:
                    report.conditions[name] = ticket.query
                source = TableSource(backend, caller, ticket, planned.schemas[name], report, name)
                self.sources.append(source)
                _register(self.con, name, source)
            self.timer.start()
            with translated(self, limits):
                relation = self.con.sql(planned.sql, params=planned.bound())
                self.reader = relation.to_arrow_reader(limits.batch_rows)
        except BaseException:
            self.close()
            raise

    def _interrupt(self) -> None:
        self.timed_out.set()
        con = self.con
        if con is not None:
            con.interrupt()

    @property
    def schema(self) -> pa.Schema:
        return self.reader.schema

    def batches(self) -> Iterator[pa.RecordBatch]:
        try:
            while True:
                with translated(self, self.limits):
                    try:
                        batch = self.reader.read_next_batch()
                    except StopIteration:
                        return
                self.report.rows_out += batch.num_rows
                yield batch
        finally:
            self.close()

    def close(self) -> None:
        self.timer.cancel()
        if self.con is not None:
            self.con.close()
            self.con = None  # type: ignore[assignment]
            self.report.seconds = time.monotonic() - self.started
            log.info("sql: %s read %d rows (%s) and sent %d rows in %.3f s",
                     self.report.user, self.report.total_rows_read,
                     ", ".join(f"{k}={v}" for k, v in self.report.rows_read.items()) or "no tables",
                     self.report.rows_out, self.report.seconds)


@contextlib.contextmanager
def translated(execution: Execution | None, limits: Limits) -> Iterator[None]:
    """A block whose DuckDB errors become bridge errors with a clear message."""
    try:
        yield
    except (duckdb.Error, pa.ArrowException) as exc:
        raise translate(exc, execution, limits) from None


def translate(exc: BaseException, execution: Execution | None, limits: Limits) -> Exception:
    if execution is not None:
        for source in execution.sources:
            if isinstance(source.error, (BridgeError, UnsafeQuery)):
                return source.error  # the backend's own refusal, type kept
    message = str(exc).strip()
    timed_out = execution is not None and execution.timed_out.is_set()
    if timed_out or isinstance(exc, duckdb.InterruptException):  # only our timer interrupts
        return InvalidArgument(f"statement cancelled: it ran longer than the "
                               f"{limits.timeout:g} s limit per statement")
    if isinstance(exc, duckdb.PermissionException):
        return PermissionDenied(f"SQL refused by the sandbox (no file, network or extension "
                                f"access): {message}")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return InvalidArgument(f"statement cancelled: it needed more than the "
                               f"{limits.memory_limit} memory limit per statement ({message})")
    if isinstance(exc, duckdb.Error):
        return InvalidArgument(f"SQL error: {message}")
    return InvalidArgument(f"SQL error: {message}")
