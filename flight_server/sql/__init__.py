"""Flight SQL on the bridge's own port: any SQL tool that speaks Arrow queries OMERO.tables.

The service hands a request here when it is Flight SQL: a descriptor or ticket
holding a ``google.protobuf.Any`` whose type URL is in the
``arrow.flight.protocol.sql`` package, or an action named in :data:`ACTIONS`.
Everything else stays with the bridge's JSON protocol. Sign-in, tokens and TLS
are the server's own.

Modules: :mod:`.messages` (the protobuf messages), :mod:`.catalog` (the table
names a caller can type), :mod:`.plan` (tables, projection and pushed-down
predicates of a statement), :mod:`.engine` (DuckDB, sandboxed),
:mod:`.metadata` (answers to the metadata commands), :mod:`.handles`
(statement handles), :mod:`.handlers` (the RPCs). Importing this package needs
neither DuckDB nor protobuf; the first Flight SQL request does (the ``sql``
extra).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pyarrow.flight as flight

from flight_server.errors import flight_error

if TYPE_CHECKING:
    from flight_server.sql.handlers import SqlFace

#: The type URL prefix of every Flight SQL command, as bytes.
TYPE_PREFIX = b"type.googleapis.com/arrow.flight.protocol.sql."

#: Actions this face answers (the rest of Flight SQL's answer UNIMPLEMENTED here too).
ACTIONS = frozenset({
    "CreatePreparedStatement", "ClosePreparedStatement", "CreatePreparedSubstraitPlan",
    "BeginTransaction", "BeginSavepoint", "EndTransaction", "EndSavepoint", "CancelQuery",
    "CloseSession", "GetSessionOptions", "SetSessionOptions", "CancelFlightInfo",
})  # fmt: skip

_ATTRIBUTE = "_flight_sql_face"
_lock = threading.Lock()


def is_sql_command(raw: bytes) -> bool:
    """Does ``raw`` look like a packed Flight SQL command (an Any with a Flight SQL type URL)?

    An Any starts with its ``type_url`` field: tag 0x0a, the URL's length as a
    varint (one byte, or two for long URLs), then the URL. JSON starts with ``{``.
    """
    raw = bytes(raw[:80])
    return raw[:1] == b"\x0a" and (raw[2:].startswith(TYPE_PREFIX)
                                   or raw[3:].startswith(TYPE_PREFIX))


def is_sql_descriptor(descriptor: flight.FlightDescriptor) -> bool:
    return (descriptor.descriptor_type == flight.DescriptorType.CMD
            and is_sql_command(descriptor.command))


def face(service: Any) -> SqlFace:
    """The Flight SQL face of a service (made on first use, one per service)."""
    existing = getattr(service, _ATTRIBUTE, None)
    if existing is not None:
        return existing
    with _lock:
        existing = getattr(service, _ATTRIBUTE, None)
        if existing is None:
            try:
                from flight_server.sql.handlers import SqlFace
            except ImportError as exc:
                raise flight_error("unavailable", f"this server has no Flight SQL: {exc}; "
                                   "install it with pip install 'omero-flight[sql]'") from None
            existing = SqlFace(service.backend, split_rows=service.split_rows)
            setattr(service, _ATTRIBUTE, existing)
        return existing
