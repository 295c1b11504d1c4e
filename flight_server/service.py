"""The Flight service: each RPC decodes its request, hands off, and translates errors.

Start one in-process (it serves as soon as it is constructed)::

    server = FlightService(LocalStore(path), "grpc://127.0.0.1:0")
    print(server.url)      # grpc://127.0.0.1:<port>
    ...
    server.shutdown()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight

from flight_protocol.columns import META_DESCRIPTION, column_type_of, short_name
from flight_protocol.messages import (
    ACTION_FILE_INFO,
    ACTION_HEALTH,
    ACTION_LIST_TABLES,
    ACTION_LOGOUT,
    ACTION_TABLE_COLUMNS,
    ACTION_TABLE_SIZE,
    ACTION_VERSION,
    ACTION_WHOAMI,
    FEATURES,
    PROTOCOL_VERSION,
    FileTicket,
    FileUploadDescriptor,
    TableTicket,
    UploadDescriptor,
    decode,
    decode_body,
    echo,
    encode_body,
)
from flight_server import __version__, registration, streaming, tickets, uploads
from flight_server import sql as flight_sql
from flight_server.auth import (
    DEFAULT_TOKEN_LIFETIME,
    MIDDLEWARE_KEY,
    AuthMiddlewareFactory,
    NoOpAuthHandler,
    SignInThrottle,
    TokenSigner,
    caller_of,
)
from flight_server.backends.base import (
    Backend,
    Caller,
    FileInfo,
    TablePage,
    TableRef,
    TableSummary,
)
from flight_server.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
    flight_errors,
    schema_errors,
)

log = logging.getLogger(__name__)

DEFAULT_SPLIT_ROWS = 1_000_000

ACTIONS = {
    ACTION_HEALTH: "Is the server up? -> {status}",
    ACTION_VERSION: "Server and protocol versions, backend name",
    ACTION_TABLE_SIZE: "Body: a table ticket -> {rows, columns}",
    ACTION_TABLE_COLUMNS: "Body: a table ticket -> {columns: [{name, type, description}]}",
    ACTION_FILE_INFO: "Body: a table or file ticket -> the OriginalFile's details",
    ACTION_LIST_TABLES: "Body: {object_type?, object_id?, page_size?, page_token?} -> "
                        "{tables: [...], next_page_token}",
    ACTION_WHOAMI: "The authenticated user",
    ACTION_LOGOUT: "End this sign-in (the OMERO backend closes the user's OMERO session)",
    registration.ACTION_REGISTER_TABLE: registration.DESCRIPTION,
}


def _file_json(info: FileInfo) -> dict[str, object]:
    return {
        "file_id": info.file_id, "annotation_id": info.annotation_id, "name": info.name,
        "mimetype": info.mimetype, "size": info.size, "owner": info.owner, "group": info.group,
        "is_table": streaming.is_table_file(info),
    }


def _no_arguments(raw: bytes, action: str) -> None:
    """The body of an action without arguments: empty, ``{}`` or ``{"v": 1}``."""
    if raw and raw.strip() != b"{}":
        decode_body(raw, f"{action} body", allowed=())


def _guarded(stream: Iterator[pa.RecordBatch],
             stopping: threading.Event | None = None) -> Iterator[pa.RecordBatch]:
    with flight_errors():
        for batch in stream:
            if stopping is not None and stopping.is_set():
                raise Unavailable("the server is stopping; the stream was cut short")
            yield batch


class FlightService(flight.FlightServerBase):
    """OMERO.tables over Arrow Flight, on top of any :class:`Backend`."""

    def __init__(
        self,
        backend: Backend,
        location: str = "grpc://127.0.0.1:0",
        *,
        require_auth: bool = True,
        token_secret: bytes | None = None,
        token_lifetime: float = DEFAULT_TOKEN_LIFETIME,
        tls_certificates: list[tuple[bytes, bytes]] | None = None,
        split_rows: int = DEFAULT_SPLIT_ROWS,
        spool_dir: str | Path | None = None,
        omero_web_url: str | None = None,
        sign_in_throttle: SignInThrottle | None = None,
        replicas: list[str] | None = None,
    ) -> None:
        if token_secret is None:
            token_secret = backend.token_secret()
        self.backend = backend
        self.split_rows = max(1, int(split_rows))
        self.spool_dir = spool_dir
        self.omero_web_url = omero_web_url
        #: Every replica's location, this one first; None: endpoints name no location.
        self.replicas = list(replicas) if replicas else None
        #: Set when a graceful shutdown's drain deadline passed: running calls end.
        self.stopping = threading.Event()
        self.signer = TokenSigner(token_secret, token_lifetime)
        #: Signs every endpoint's ticket for the caller; any replica with the key serves it.
        self.tickets = tickets.TicketSigner(token_secret)
        middleware = {MIDDLEWARE_KEY: AuthMiddlewareFactory(backend, self.signer, require_auth,
                                                            throttle=sign_in_throttle)}
        scheme, _, address = location.partition("://")
        if scheme not in ("grpc", "grpc+tcp", "grpc+tls"):
            raise ValueError(f"unsupported location {location!r}: use grpc:// or grpc+tls://")
        if scheme == "grpc+tls" and not tls_certificates:
            raise ValueError("a grpc+tls:// location needs tls_certificates")
        scheme = "grpc+tls" if tls_certificates else "grpc"
        location = f"{scheme}://{address}"
        super().__init__(location, auth_handler=NoOpAuthHandler(), middleware=middleware,
                         tls_certificates=tls_certificates or [])
        host = address.rsplit(":", 1)[0]
        self.url = f"{scheme}://{host}:{self.port}"
        log.info("serving %s on %s", backend.name, self.url)

    # -- reads -----------------------------------------------------------------------

    def _table_info(self, caller: Caller, ticket: TableTicket,
                    descriptor: flight.FlightDescriptor, *, planned: bool = True,
                    app_metadata: bytes = b"") -> flight.FlightInfo:
        """The read's FlightInfo; ``planned``: its do_get follows, so the backend may keep
        the table open for it (``Backend.release_planned``), not so for a listing."""
        read = streaming.plan_read(self.backend, caller, ticket)
        kept = False
        try:
            until = time.time() + self.signer.lifetime
            expires = pa.scalar(int(until * 1e9), type=pa.timestamp("ns", tz="UTC"))
            file_id = read.handle.info.file_id
            endpoints = [
                flight.FlightEndpoint(self.tickets.issue(t, caller, file_id, until).encode(),
                                      streaming.rotated(self.replicas, i),
                                      expiration_time=expires,
                                      app_metadata=streaming.endpoint_metadata(t))
                for i, t in enumerate(streaming.split_ticket(read, self.split_rows))
            ]
            info = flight.FlightInfo(read.schema, descriptor, endpoints, read.total_records, -1,
                                     ordered=True, app_metadata=app_metadata)
            if planned:  # the endpoints' signed tickets name the table by its file id
                self.backend.release_planned(caller, TableRef(file_id=file_id), read.handle)
                kept = True
            return info
        finally:
            if not kept:
                read.close()

    def get_flight_info(self, context: flight.ServerCallContext,
                        descriptor: flight.FlightDescriptor) -> flight.FlightInfo:
        if flight_sql.is_sql_descriptor(descriptor):  # Flight SQL: flight_server/sql
            return flight_sql.face(self).get_flight_info(context, descriptor)
        with flight_errors():
            caller = caller_of(context)
            request = self._read_command(descriptor)
            if isinstance(request, TableTicket):
                return self._table_info(caller, request, descriptor)
            info = self.backend.file_info(caller, streaming.ref_of(request))
            streaming.check_file(info, request)
            servers = self.replicas  # every replica, as for tables, where sign-ins work on all
            if servers and not self.backend.portable_sign_ins:
                servers = servers[:1]  # OMERO: only this replica holds the caller's session
            endpoint = flight.FlightEndpoint(request.encode(), streaming.rotated(servers, 0))
            return flight.FlightInfo(streaming.FILE_SCHEMA, descriptor, [endpoint], -1, info.size)

    def get_schema(self, context: flight.ServerCallContext,
                   descriptor: flight.FlightDescriptor) -> flight.SchemaResult:
        if flight_sql.is_sql_descriptor(descriptor):  # Flight SQL: flight_server/sql
            return flight_sql.face(self).get_schema(context, descriptor)
        # pyarrow does not type a FlightError raised here: see errors.schema_refusal
        with schema_errors():
            caller = caller_of(context)
            request = self._read_command(descriptor)
            if isinstance(request, FileTicket):
                return flight.SchemaResult(streaming.FILE_SCHEMA)
            read = streaming.plan_read(self.backend, caller, request)
            read.close()
            return flight.SchemaResult(read.schema)

    def do_get(self, context: flight.ServerCallContext,
               ticket: flight.Ticket) -> flight.FlightDataStream:
        if flight_sql.is_sql_command(ticket.ticket):  # Flight SQL: flight_server/sql
            return flight_sql.face(self).do_get(context, ticket)
        with flight_errors():
            request = decode(ticket.ticket, "ticket")
            caller = caller_of(context, signed_ticket=tickets.is_signed(request))
            if isinstance(request, TableTicket):
                read = tickets.redeem(self.backend, caller, request, self.tickets)
                return flight.GeneratorStream(read.schema, _guarded(streaming.batches(read),
                                                                    self.stopping))
            if isinstance(request, FileTicket):
                info = self.backend.file_info(caller, streaming.ref_of(request))
                streaming.check_file(info, request)
                chunks = self.backend.read_file(caller, streaming.ref_of(request),
                                                request.chunk_size or streaming.DEFAULT_FILE_CHUNK)
                return flight.GeneratorStream(streaming.FILE_SCHEMA,
                                              _guarded(streaming.file_batches(chunks),
                                                       self.stopping))
            raise InvalidArgument(f"a do_get ticket must be a table or file ticket, "
                                  f"not {echo(request.kind)}")

    def list_flights(self, context: flight.ServerCallContext,
                     criteria: bytes) -> Iterator[flight.FlightInfo]:
        with flight_errors():
            caller = caller_of(context)
            body = decode_body(criteria, "list_flights criteria", allowed=self.LIST_FIELDS)
            infos: list[flight.FlightInfo] = []
            while True:
                page = self._list(caller, body)
                infos.extend(self._listed_infos(caller, page.tables))
                if infos or page.next_page_token is None:
                    break
                body = {**body, "page_token": page.next_page_token}  # a page of none: on
            if page.next_page_token is not None:
                last = infos[-1]
                infos[-1] = flight.FlightInfo(
                    last.schema, last.descriptor, list(last.endpoints), last.total_records,
                    last.total_bytes, ordered=last.ordered,
                    app_metadata=encode_body(next_page_token=page.next_page_token))
        yield from infos

    def _listed_infos(self, caller: Caller,
                      tables: list[TableSummary]) -> Iterator[flight.FlightInfo]:
        """Each listed table's FlightInfo. A table that cannot be opened as one (a file
        someone saved with the OMERO.tables mimetype, say) is left out and logged: in a
        shared group it would otherwise fail every member's listing."""
        for summary in tables:
            ticket = TableTicket(file_id=summary.file.file_id)
            descriptor = flight.FlightDescriptor.for_command(ticket.encode())
            try:
                yield self._table_info(caller, ticket, descriptor, planned=False)
            except (InvalidArgument, NotFound, PermissionDenied) as exc:
                log.warning("list_flights: leaving out OriginalFile %s (%s): %s",
                            summary.file.file_id, exc.code, exc)

    # -- writes ----------------------------------------------------------------------

    def do_put(self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor,
               reader: flight.MetadataRecordBatchReader,
               writer: flight.FlightMetadataWriter) -> None:
        if flight_sql.is_sql_descriptor(descriptor):  # Flight SQL: flight_server/sql
            return flight_sql.face(self).do_put(context, descriptor, reader, writer)
        with flight_errors():
            caller = caller_of(context)
            request = self._decode_command(descriptor, "upload descriptor")

            def cancelled() -> bool:
                return context.is_cancelled() or self.stopping.is_set()

            if isinstance(request, UploadDescriptor):
                result = uploads.receive_table(self.backend, caller, request, reader,
                                               self.spool_dir, cancelled)
                answer = encode_body(annotation_id=result.annotation_id,
                                     file_id=result.file_id, rows=result.rows)
            elif isinstance(request, FileUploadDescriptor):
                info = uploads.receive_file(self.backend, caller, request, reader, cancelled)
                answer = encode_body(**_file_json(info))
            else:
                raise InvalidArgument("do_put needs an upload or file_upload descriptor, "
                                      f"not {echo(request.kind)}")
            writer.write(pa.py_buffer(answer))

    # -- actions ---------------------------------------------------------------------

    def do_exchange(self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor,
                    reader: flight.MetadataRecordBatchReader,
                    writer: flight.MetadataRecordBatchWriter) -> None:
        # Not NotImplementedError: pyarrow would send it with a Python traceback.
        with flight_errors():
            caller_of(context)
            raise InvalidArgument("do_exchange is not offered: read with do_get, "
                                  "write with do_put")

    def list_actions(self, context: flight.ServerCallContext) -> list[tuple[str, str]]:
        with flight_errors():
            return list(ACTIONS.items())

    def do_action(self, context: flight.ServerCallContext,
                  action: flight.Action) -> Iterator[bytes]:
        if action.type in flight_sql.ACTIONS:  # Flight SQL: flight_server/sql
            return flight_sql.face(self).do_action(context, action)
        with flight_errors():
            caller = caller_of(context)
            name = action.type
            if name not in ACTIONS:
                raise InvalidArgument(f"unknown action {echo(name)}; "
                                      f"actions are {', '.join(ACTIONS)}")
            raw = action.body.to_pybytes() if action.body is not None else b""
            result = getattr(self, "_action_" + name)(caller, raw)
        return iter([result])

    def _ticket_body(self, raw: bytes) -> TableTicket | FileTicket:
        request = decode(raw, "action body")
        if not isinstance(request, (TableTicket, FileTicket)):
            raise InvalidArgument("the action body must be a table or file ticket")
        return request

    def _action_health(self, caller: Caller, raw: bytes) -> bytes:
        _no_arguments(raw, "health")
        return encode_body(status="ok")

    def _action_version(self, caller: Caller, raw: bytes) -> bytes:
        _no_arguments(raw, "version")
        return encode_body(server=__version__, protocol=PROTOCOL_VERSION,
                           backend=self.backend.name, features=list(FEATURES))

    def _action_whoami(self, caller: Caller, raw: bytes) -> bytes:
        _no_arguments(raw, "whoami")
        return encode_body(username=caller.username, user_id=caller.user_id,
                           admin=caller.is_admin, group_ids=list(caller.group_ids))

    def _action_logout(self, caller: Caller, raw: bytes) -> bytes:
        _no_arguments(raw, "logout")
        self.backend.logout(caller)
        return encode_body(status="signed out")

    def _action_register_table(self, caller: Caller, raw: bytes) -> bytes:
        return registration.register(self.backend, caller, raw, self.omero_web_url)

    def _action_table_size(self, caller: Caller, raw: bytes) -> bytes:
        request = self._ticket_body(raw)
        with self.backend.open_table(caller, streaming.ref_of(request)) as handle:
            return encode_body(rows=handle.num_rows, columns=len(handle.schema))

    def _action_table_columns(self, caller: Caller, raw: bytes) -> bytes:
        request = self._ticket_body(raw)
        with self.backend.open_table(caller, streaming.ref_of(request)) as handle:
            columns = [
                {"name": f.name, "type": short_name(column_type_of(f)),
                 "description": (f.metadata or {}).get(META_DESCRIPTION, b"").decode(
                     "utf-8", "replace")}
                for f in handle.schema
            ]
        return encode_body(columns=columns)

    def _action_file_info(self, caller: Caller, raw: bytes) -> bytes:
        request = self._ticket_body(raw)
        return encode_body(**_file_json(self.backend.file_info(caller,
                                                               streaming.ref_of(request))))

    def _action_list_tables(self, caller: Caller, raw: bytes) -> bytes:
        page = self._list(caller, decode_body(raw, "list_tables body", allowed=self.LIST_FIELDS))
        tables = [
            {**_file_json(s.file), "links": [list(link) for link in s.links], "rows": s.rows}
            for s in page.tables
        ]
        return encode_body(tables=tables, next_page_token=page.next_page_token)

    # -- helpers ---------------------------------------------------------------------

    LIST_FIELDS = ("object_type", "object_id", "page_size", "page_token")

    def _list(self, caller: Caller, body: dict[str, object]) -> TablePage:
        """A listing: one page when the body names a page size or token, else every table.
        The backend contract checks every field (Backend.list_tables_page)."""
        object_type, object_id = body.get("object_type"), body.get("object_id")
        page_size, page_token = body.get("page_size"), body.get("page_token")
        if page_size is None and page_token is None:
            return TablePage(self.backend.list_tables(
                caller, object_type, object_id))  # type: ignore[arg-type]
        return self.backend.list_tables_page(
            caller, object_type, object_id, page_size, page_token)  # type: ignore[arg-type]

    @staticmethod
    def _decode_command(descriptor: flight.FlightDescriptor, what: str = "descriptor"):
        if descriptor.descriptor_type != flight.DescriptorType.CMD:
            raise InvalidArgument(f"the {what} must be a command (JSON), not a path")
        return decode(descriptor.command, what)

    @classmethod
    def _read_command(cls, descriptor: flight.FlightDescriptor) -> TableTicket | FileTicket:
        """A descriptor for get_flight_info or get_schema: a table or file ticket."""
        request = cls._decode_command(descriptor)
        if not isinstance(request, (TableTicket, FileTicket)):
            raise InvalidArgument(f"this descriptor must be a table or file ticket, not "
                                  f"{echo(request.kind)} (upload descriptors go to do_put)")
        return request

