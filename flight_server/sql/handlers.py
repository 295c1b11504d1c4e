"""The Flight SQL RPCs: GetFlightInfo, GetSchema, DoGet and the Flight SQL actions.

Statements travel in handles (:mod:`.handles`): the server keeps no
per-statement state, and every RPC re-plans the statement as its own caller.

Errors: bridge errors keep their type and code (``flight_server.errors``);
a command or action this server does not implement answers UNIMPLEMENTED (a
Python ``NotImplementedError``, which pyarrow maps to that gRPC status).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from flight_server.auth import caller_of
from flight_server.backends.base import Backend, Caller
from flight_server.errors import InvalidArgument, flight_error, to_flight
from flight_server.sql import engine, messages, metadata
from flight_server.sql.handles import Handle, bound_values, split
from flight_server.sql.messages import FLIGHT, SQL, BadMessage, pack, parse, unpack

log = logging.getLogger(__name__)

MAX_SQL_LENGTH = 100_000


def _checked_sql(sql: str) -> str:
    if len(sql) > MAX_SQL_LENGTH:
        raise InvalidArgument(f"the SQL statement is longer than {MAX_SQL_LENGTH} characters")
    return sql


@contextlib.contextmanager
def sql_errors() -> Iterator[None]:
    """The error boundary of the Flight SQL face."""
    try:
        yield
    except (flight.FlightError, NotImplementedError):
        raise
    except BadMessage as exc:
        raise flight_error("invalid_argument", f"malformed Flight SQL request: {exc}") from None
    except Exception as exc:
        raise to_flight(exc) from None


def _guarded(stream: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    with sql_errors():
        yield from stream


class SqlFace:
    """Flight SQL over one :class:`FlightService`'s backend, sign-in and port."""

    def __init__(self, backend: Backend, limits: engine.Limits | None = None,
                 split_rows: int = 1_000_000) -> None:
        self.backend = backend
        self.split_rows = split_rows  # a row-by-row result over more rows: several endpoints
        self.limits = limits or engine.Limits.from_env()
        self.pushdown = True  # False reads whole tables: only to measure what pushdown saves
        self.reports: deque[engine.Report] = deque(maxlen=256)
        self._lock = threading.Lock()

    # -- planning --------------------------------------------------------------------

    def _plan(self, caller: Caller, handle: Handle) -> tuple[engine.Planned, pa.Schema]:
        planned = engine.plan_statement(self.backend, caller, _checked_sql(handle.sql),
                                        self.limits, values=handle.values)
        return planned, engine.describe(planned, self.limits)

    def _statement_info(self, caller: Caller, handle: Handle,
                        descriptor: flight.FlightDescriptor) -> flight.FlightInfo:
        planned, schema = self._plan(caller, handle)
        ranges: list[tuple[int, int] | None] = [None]
        if planned.splittable is not None and planned.splittable[1] > self.split_rows:
            ranges = list(split(planned.splittable[1], self.split_rows))
        endpoints = [
            flight.FlightEndpoint(pack(SQL["TicketStatementQuery"](
                statement_handle=replace(handle, rows=rows).encode())), [])
            for rows in ranges
        ]  # fmt: skip
        return flight.FlightInfo(schema, descriptor, endpoints, -1, -1)

    def _metadata(self, caller: Caller, name: str, command: Any) -> pa.Table:
        if name == "CommandGetSqlInfo":
            return metadata.sql_info(command.info)
        if name == "CommandGetCatalogs":
            return metadata.catalogs()
        if name == "CommandGetDbSchemas":
            return metadata.db_schemas(
                command.catalog if command.HasField("catalog") else None,
                command.db_schema_filter_pattern
                if command.HasField("db_schema_filter_pattern") else None)
        if name == "CommandGetTables":
            return metadata.tables(
                self.backend, caller,
                command.catalog if command.HasField("catalog") else None,
                command.db_schema_filter_pattern
                if command.HasField("db_schema_filter_pattern") else None,
                command.table_name_filter_pattern
                if command.HasField("table_name_filter_pattern") else None,
                list(command.table_types), command.include_schema)
        if name == "CommandGetTableTypes":
            return metadata.table_types()
        if name == "CommandGetPrimaryKeys":
            return metadata.primary_keys()
        if name == "CommandGetXdbcTypeInfo":
            return metadata.xdbc_type_info(
                command.data_type if command.HasField("data_type") else None)
        raise NotImplementedError(f"Flight SQL {name} is not supported by this server")

    @staticmethod
    def _statement(name: str, command: Any) -> Handle | None:
        if name == "CommandStatementQuery":
            return Handle(command.query)
        if name == "CommandPreparedStatementQuery":
            return replace(Handle.decode(command.prepared_statement_handle), rows=None)
        if name in ("CommandStatementUpdate", "CommandPreparedStatementUpdate"):
            raise InvalidArgument("this server is read-only: only SELECT statements are accepted")
        return None

    # -- RPCs ------------------------------------------------------------------------

    def get_flight_info(self, context: flight.ServerCallContext,
                        descriptor: flight.FlightDescriptor) -> flight.FlightInfo:
        with sql_errors():
            caller = caller_of(context)
            name, command = unpack(descriptor.command)
            if command is None:
                raise NotImplementedError(f"Flight SQL {name} is not supported by this server")
            handle = self._statement(name, command)
            if handle is not None:
                return self._statement_info(caller, handle, descriptor)
            table = self._metadata(caller, name, command)
            endpoint = flight.FlightEndpoint(descriptor.command, [])
            return flight.FlightInfo(table.schema, descriptor, [endpoint], table.num_rows, -1)

    def get_schema(self, context: flight.ServerCallContext,
                   descriptor: flight.FlightDescriptor) -> flight.SchemaResult:
        with sql_errors():
            caller = caller_of(context)
            name, command = unpack(descriptor.command)
            if command is None:
                raise NotImplementedError(f"Flight SQL {name} is not supported by this server")
            handle = self._statement(name, command)
            if handle is not None:
                return flight.SchemaResult(self._plan(caller, handle)[1])
            return flight.SchemaResult(self._metadata(caller, name, command).schema)

    def do_get(self, context: flight.ServerCallContext,
               ticket: flight.Ticket) -> flight.FlightDataStream:
        with sql_errors():
            caller = caller_of(context)
            name, command = unpack(ticket.ticket)
            if name == "TicketStatementQuery" and command is not None:
                return self._run(caller, Handle.decode(command.statement_handle))
            if command is None:
                raise NotImplementedError(f"Flight SQL {name} is not supported by this server")
            handle = self._statement(name, command)
            if handle is not None:
                return self._run(caller, handle)
            return flight.RecordBatchStream(self._metadata(caller, name, command))

    def _run(self, caller: Caller, handle: Handle) -> flight.FlightDataStream:
        planned = engine.plan_statement(self.backend, caller, _checked_sql(handle.sql),
                                        self.limits, self.pushdown, handle.rows, handle.values)
        report = engine.Report(caller.username, handle.sql)
        execution = engine.Execution(self.backend, caller, planned, self.limits, report)
        with self._lock:
            self.reports.append(report)
        return flight.GeneratorStream(execution.schema, _guarded(execution.batches()))

    def do_action(self, context: flight.ServerCallContext,
                  action: flight.Action) -> Iterator[bytes]:
        with sql_errors():
            caller = caller_of(context)
            body = action.body.to_pybytes() if action.body is not None else b""
            kind = action.type
            if kind == "CreatePreparedStatement":
                name, request = unpack(body)
                if name != "ActionCreatePreparedStatementRequest" or request is None:
                    raise BadMessage(f"CreatePreparedStatement needs its request, not {name}")
                handle = Handle(request.query)
                _, schema = self._plan(caller, handle)
                result = SQL["ActionCreatePreparedStatementResult"](
                    prepared_statement_handle=handle.encode(),
                    dataset_schema=schema.serialize().to_pybytes())
                return iter([pack(result)])
            if kind == "ClosePreparedStatement":
                return iter([])  # handles hold no state
            if kind == "CloseSession":
                parse("CloseSessionRequest", body)
                closed = FLIGHT["CloseSessionResult"](status=messages.CLOSE_SESSION_CLOSED)
                return iter([closed.SerializeToString()])
            raise NotImplementedError(f"Flight SQL action {kind!r} is not supported")

    def do_put(self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor,
               reader: flight.MetadataRecordBatchReader,
               writer: flight.FlightMetadataWriter) -> None:
        """Bind parameter values to a prepared statement: the answer is a new handle that
        carries them (DoPutPreparedStatementResult), so the server keeps no state."""
        with sql_errors():
            caller_of(context)
            name, command = unpack(descriptor.command)
            if name != "CommandPreparedStatementQuery" or command is None:
                if name in ("CommandStatementUpdate", "CommandPreparedStatementUpdate",
                            "CommandStatementIngest"):
                    raise InvalidArgument("this server is read-only: nothing can be written "
                                          "with SQL")
                raise NotImplementedError(f"Flight SQL DoPut with {name} is not supported")
            handle = Handle.decode(command.prepared_statement_handle)
            bound = replace(handle, values=bound_values(reader), rows=None)
            result = SQL["DoPutPreparedStatementResult"](prepared_statement_handle=bound.encode())
            writer.write(pa.py_buffer(result.SerializeToString()))
