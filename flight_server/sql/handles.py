"""Statement handles: what a Flight SQL client hands back to run a statement.

A handle (in ``TicketStatementQuery`` and in prepared statements) is versioned
JSON holding the statement's text, the parameter values bound to it (binding
answers a new handle, as ``DoPutPreparedStatementResult`` allows) and, for one
endpoint of a split result, its row range. The server keeps no per-statement
state, and whoever presents a handle runs it as themselves, so a handle cannot
reach another user's tables.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pyarrow.flight as flight

from flight_protocol.messages import ProtocolError, decode_json
from flight_server import streaming
from flight_server.errors import InvalidArgument
from flight_server.sql.engine import Parameter

HANDLE_VERSION = 1
@dataclass(frozen=True)
class Handle:
    """A statement handle: the SQL, bound parameter values, and an endpoint's row range."""

    sql: str
    values: tuple[Parameter, ...] = ()
    rows: tuple[int, int] | None = None

    def encode(self) -> bytes:
        body: dict[str, object] = {"v": HANDLE_VERSION, "sql": self.sql}
        if self.values:
            body["values"] = list(self.values)
        if self.rows is not None:
            body["rows"] = list(self.rows)
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Handle:
        try:  # the limits every request gets: depth, digits, size, valid Unicode
            obj = decode_json(raw, "statement handle")
        except ProtocolError as exc:
            raise InvalidArgument(f"not a statement handle of this server: {exc}") from None
        if not isinstance(obj, dict) or type(obj.get("v")) is not int \
                or obj["v"] != HANDLE_VERSION or not isinstance(obj.get("sql"), str) \
                or not set(obj) <= {"v", "sql", "values", "rows"}:
            raise InvalidArgument("not a statement handle of this server")
        values = obj.get("values") or []
        if not isinstance(values, list) or not all(_scalar(v) for v in values):
            raise InvalidArgument("malformed parameter values in a statement handle")
        rows = obj.get("rows")
        if rows is not None and not (
                isinstance(rows, list) and len(rows) == 2
                and all(type(r) is int and r >= 0 for r in rows) and rows[0] <= rows[1]):
            raise InvalidArgument("malformed row range in a statement handle")
        return cls(obj["sql"], tuple(values), None if rows is None else (rows[0], rows[1]))


def _scalar(value: object) -> bool:
    return value is None or type(value) in (bool, int, float, str)


def bound_values(reader: flight.MetadataRecordBatchReader) -> tuple[Parameter, ...]:
    """The one row of parameter values a client binds to a prepared statement."""
    table = reader.read_all()
    if table.num_rows != 1:
        raise InvalidArgument(f"bind exactly one row of parameter values, not {table.num_rows}")
    values = tuple(column[0].as_py() for column in table.columns)
    for value in values:
        if not _scalar(value):
            raise InvalidArgument(f"parameter value {value!r} is not a number, a string, a "
                                  "boolean or null")
    return values


def split(rows: int, split_rows: int) -> list[tuple[int, int]]:
    """Row ranges for the endpoints of a result over ``rows`` rows (at most MAX_ENDPOINTS)."""
    parts = min(streaming.MAX_ENDPOINTS, math.ceil(rows / max(1, split_rows)))
    per = math.ceil(rows / max(1, parts))
    return [(start, min(start + per, rows)) for start in range(0, rows, per)]


