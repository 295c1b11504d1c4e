"""The Flight SQL protobuf messages, built at import from their field numbers.

Where the classes come from, and why: pyarrow ships no Flight SQL message
classes, nor does ``adbc-driver-flightsql`` (its protocol code is compiled into
the Go library). The PyPI packages that do ship generated ``FlightSql_pb2``
modules are other projects' clients (``flightsql-dbapi``, stale and pinning
SQLAlchemy < 2; ``altertable-flightsql``, one vendor's client whose generated
module is an internal detail) and each pins the protobuf runtime its gencode was
made with. So the messages this server speaks are declared here, field by field
as the Flight SQL specification numbers them, as a ``FileDescriptorProto``; the
``protobuf`` package's own runtime builds the classes and does every byte of
encoding and decoding. No generated code, no protoc at build time, no hand-made
wire decoder, and any protobuf >= 4.25 works.

The file is declared ``proto2`` so that the spec's ``optional`` fields keep their
presence (``HasField``); the wire format is the same as the spec's ``proto3``.
The classes live in a private descriptor pool, so another library that loads
the real ``FlightSql.proto`` into the default pool cannot clash with them.
Only the messages this server reads or writes are declared; an unknown command
is reported by its type URL.
"""

from __future__ import annotations

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

SQL_PACKAGE = "arrow.flight.protocol.sql"
FLIGHT_PACKAGE = "arrow.flight.protocol"
TYPE_PREFIX = "type.googleapis.com/"
SQL_TYPE_PREFIX = f"{TYPE_PREFIX}{SQL_PACKAGE}."

_F = descriptor_pb2.FieldDescriptorProto
OPT, REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
STRING, BYTES, BOOL, UINT32, INT32, INT64, ENUM = (
    _F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_BOOL, _F.TYPE_UINT32, _F.TYPE_INT32, _F.TYPE_INT64,
    _F.TYPE_ENUM,
)  # fmt: skip

#: message name -> [(field name, number, label, type)], as numbered in FlightSql.proto.
SQL_MESSAGES: dict[str, list[tuple[str, int, int, int]]] = {
    "CommandGetSqlInfo": [("info", 1, REP, UINT32)],
    "CommandGetXdbcTypeInfo": [("data_type", 1, OPT, INT32)],
    "CommandGetCatalogs": [],
    "CommandGetDbSchemas": [("catalog", 1, OPT, STRING),
                            ("db_schema_filter_pattern", 2, OPT, STRING)],
    "CommandGetTables": [("catalog", 1, OPT, STRING), ("db_schema_filter_pattern", 2, OPT, STRING),
                         ("table_name_filter_pattern", 3, OPT, STRING),
                         ("table_types", 4, REP, STRING), ("include_schema", 5, OPT, BOOL)],
    "CommandGetTableTypes": [],
    "CommandGetPrimaryKeys": [("catalog", 1, OPT, STRING), ("db_schema", 2, OPT, STRING),
                              ("table", 3, OPT, STRING)],
    "CommandGetExportedKeys": [("catalog", 1, OPT, STRING), ("db_schema", 2, OPT, STRING),
                               ("table", 3, OPT, STRING)],
    "CommandGetImportedKeys": [("catalog", 1, OPT, STRING), ("db_schema", 2, OPT, STRING),
                               ("table", 3, OPT, STRING)],
    "CommandStatementQuery": [("query", 1, OPT, STRING), ("transaction_id", 2, OPT, BYTES)],
    "CommandStatementUpdate": [("query", 1, OPT, STRING), ("transaction_id", 2, OPT, BYTES)],
    "TicketStatementQuery": [("statement_handle", 1, OPT, BYTES)],
    "CommandPreparedStatementQuery": [("prepared_statement_handle", 1, OPT, BYTES)],
    "CommandPreparedStatementUpdate": [("prepared_statement_handle", 1, OPT, BYTES)],
    "ActionCreatePreparedStatementRequest": [("query", 1, OPT, STRING),
                                             ("transaction_id", 2, OPT, BYTES)],
    "ActionCreatePreparedStatementResult": [("prepared_statement_handle", 1, OPT, BYTES),
                                            ("dataset_schema", 2, OPT, BYTES),
                                            ("parameter_schema", 3, OPT, BYTES)],
    "ActionClosePreparedStatementRequest": [("prepared_statement_handle", 1, OPT, BYTES)],
    "DoPutUpdateResult": [("record_count", 1, OPT, INT64)],
    "DoPutPreparedStatementResult": [("prepared_statement_handle", 1, OPT, BYTES)],
}  # fmt: skip

#: Flight.proto session messages (bodies of the CloseSession action, not packed in Any).
FLIGHT_MESSAGES: dict[str, list[tuple[str, int, int, int]]] = {
    "CloseSessionRequest": [],
    "CloseSessionResult": [("status", 1, OPT, INT32)],
}

#: CloseSessionResult.Status
CLOSE_SESSION_CLOSED = 1


def _file(name: str, package: str, messages: dict[str, list[tuple[str, int, int, int]]]
          ) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(name=name, package=package, syntax="proto2")
    for message, fields in messages.items():
        m = proto.message_type.add(name=message)
        for field, number, label, kind in fields:
            m.field.add(name=field, number=number, label=label, type=kind)
    return proto


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file("omero_flight/flight_sql_subset.proto", SQL_PACKAGE, SQL_MESSAGES))
_POOL.Add(_file("omero_flight/flight_session_subset.proto", FLIGHT_PACKAGE, FLIGHT_MESSAGES))


def _class(full_name: str) -> type[Message]:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(full_name))


SQL: dict[str, type[Message]] = {n: _class(f"{SQL_PACKAGE}.{n}") for n in SQL_MESSAGES}
FLIGHT: dict[str, type[Message]] = {n: _class(f"{FLIGHT_PACKAGE}.{n}") for n in FLIGHT_MESSAGES}


class BadMessage(ValueError):
    """Bytes that are not the Flight SQL message they should be."""


def unpack(raw: bytes) -> tuple[str, Message | None]:
    """A packed command: (its message name, the message or None when not declared here)."""
    packed = any_pb2.Any()
    try:
        packed.ParseFromString(raw)
    except DecodeError as exc:
        raise BadMessage(f"not a protobuf Any: {exc}") from None
    if not packed.type_url.startswith(SQL_TYPE_PREFIX):
        raise BadMessage(f"not a Flight SQL command: {packed.type_url!r}")
    name = packed.type_url[len(SQL_TYPE_PREFIX):]
    cls = SQL.get(name)
    if cls is None:
        return name, None
    message = cls()
    try:
        message.ParseFromString(packed.value)
    except DecodeError as exc:
        raise BadMessage(f"malformed {name}: {exc}") from None
    return name, message


def pack(message: Message) -> bytes:
    """A message packed in an Any, as Flight SQL sends commands, tickets and results."""
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed.SerializeToString()


def parse(name: str, raw: bytes) -> Message:
    """A bare (not packed) message, e.g. an action body of the Flight session actions."""
    cls = SQL.get(name) or FLIGHT[name]
    message = cls()
    try:
        message.ParseFromString(raw)
    except DecodeError as exc:
        raise BadMessage(f"malformed {name}: {exc}") from None
    return message
