"""The omero-flight wire protocol: tickets, descriptors, actions and error codes.

Both the server and the client use these types; they are the single
definition of what travels over Flight. Everything is versioned JSON so that a
client in any language can speak it (see ``docs/protocol.md``).

A table read names the table by OriginalFile id (``file_id``) or by
FileAnnotation id (``annotation_id``), then optionally a column selection, a
row selection (a list or a ``[start, stop)`` range) *or* a PyTables condition
with variables, and the number of rows per record batch.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PROTOCOL_VERSION = 1

#: Name of the int64 column that carries the table's own row numbers.
ROW_NUMBER_COLUMN = "__row__"

#: Arrow field metadata keys.
META_COLUMN_TYPE = b"omero.column_type"  # Ice type id, e.g. b"::omero::grid::ImageColumn"
META_DESCRIPTION = b"omero.description"
META_STRING_SIZE = b"omero.string_size"  # byte width of a StringColumn

#: Action names understood by the server.
ACTION_HEALTH = "health"
ACTION_VERSION = "version"
ACTION_TABLE_SIZE = "table_size"
ACTION_TABLE_COLUMNS = "table_columns"
ACTION_FILE_INFO = "file_info"
ACTION_LIST_TABLES = "list_tables"
ACTION_WHOAMI = "whoami"
ACTION_REGISTER_TABLE = "register_table"  # OMERO Plus in-place TileDB registration
ACTION_LOGOUT = "logout"  # end this sign-in; the OMERO backend closes the OMERO session

#: Error codes carried as JSON in a Flight error's ``extra_info``.
ERROR_CODES = (
    "invalid_argument",
    "not_found",
    "already_exists",
    "unauthenticated",
    "permission_denied",
    "unavailable",
    "internal",
)

#: Objects an uploaded table can be linked to (OMERO model class names).
LINK_TYPES = ("Image", "Dataset", "Project", "Plate", "Screen", "Well", "Roi")

# -- Limits (docs/limits.md lists them all; both ends enforce them before any work) --------

#: Bytes of one ticket, descriptor command or action body.
MAX_REQUEST_BYTES = 16 << 20
#: Entries of a row list (a longer selection is a ``{start, stop}`` range or several reads).
MAX_ROW_LIST = 1_000_000
#: JSON values (``,`` separators) in one request, counted before parsing.
MAX_JSON_VALUES = MAX_ROW_LIST + 10_000
#: Nesting of JSON arrays and objects in one request.
MAX_JSON_DEPTH = 16
#: Digits of one JSON number (int64 has 19).
MAX_NUMBER_DIGITS = 20
#: Largest id and row number: ids are positive int64, row numbers non-negative int64.
MAX_INT64 = 2**63 - 1
#: Rows per record batch a table ticket may ask for.
MAX_CHUNK_ROWS = 1_000_000
#: Bytes per record batch a file ticket may ask for.
MAX_FILE_CHUNK_BYTES = 16 << 20
#: Characters of a table, file or column name.
MAX_NAME_CHARS = 1024
#: Characters of a description or mimetype.
MAX_TEXT_CHARS = 64 << 10
#: Characters of a query (query.py applies its own, finer limits after this one).
MAX_QUERY_CHARS = 64 << 10
#: Variables of one query.
MAX_VARIABLES = 1000
#: Columns named in one read, and columns of one uploaded table.
MAX_COLUMNS = 10_000
#: Objects one upload may be linked to.
MAX_LINKS = 1000
#: Declared byte width (``omero.string_size``) of one string column.
MAX_STRING_WIDTH = 1 << 20
#: Characters of user text echoed in an error message.
MAX_ECHO_CHARS = 200

#: With ``explicit_commit`` in an upload descriptor, the client sends this as
#: app metadata (``writer.write_metadata(COMMIT_METADATA)``) after the last
#: batch; a stream that ends without it is discarded. That tells a finished
#: upload from a client that gave up half way and closed its stream cleanly.
COMMIT_METADATA = b'{"v":1,"commit":true}'


class ProtocolError(ValueError):
    """A ticket, descriptor or action body that does not follow the protocol."""


def echo(value: Any, limit: int = MAX_ECHO_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters: the one way user input enters a message."""
    if isinstance(value, (str, bytes)) and len(value) > 4 * limit:
        value = value[: 4 * limit]  # repr of a huge string would cost before it is cut
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"  # str() of a huge int is refused
    text = repr(value) if not isinstance(value, (list, tuple, dict)) else _short_repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short_repr(value: Any) -> str:
    if isinstance(value, dict):
        items = list(value.items())[:20]
        inner = ", ".join(f"{echo(k, 40)}: {echo(v, 40)}" for k, v in items)
        return "{" + inner + (", ..." if len(value) > 20 else "") + "}"
    inner = ", ".join(echo(v, 40) for v in list(value)[:20])
    more = ", ..." if len(value) > 20 else ""
    return ("[" + inner + more + "]") if isinstance(value, list) else ("(" + inner + more + ")")


def _check_int(value: Any, what: str, low: int, high: int = MAX_INT64) -> int:
    """An integer in ``[low, high]``; booleans, strings and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ProtocolError(f"{what} must be an integer, got {echo(value)}")
    value = int(value)
    if not low <= value <= high:
        raise ProtocolError(f"{what} must be between {low} and {high}, got {echo(value)}")
    return value


def _check_id(value: Any, what: str) -> int:
    """An OMERO id: a positive int64."""
    return _check_int(value, what, 1)


def _check_row(value: Any, what: str) -> int:
    """A row number: a non-negative int64."""
    return _check_int(value, what, 0)


def _check_rows(rows: tuple[Any, ...]) -> tuple[int, ...]:
    """Row numbers, checked in C-speed passes when they are plain ints (the usual case)."""
    if rows and set(map(type, rows)) == {int} and min(rows) >= 0 and max(rows) <= MAX_INT64:
        return rows
    return tuple(_check_row(r, "row number") for r in rows)


#: A row list as sent: ``{"int64_le_hex": "..."}``, the row numbers as little-endian int64
#: bytes written in hex (the field's name says so).
PACKED_ROWS = "int64_le_hex"
#: What a bridge lists under ``features`` in its ``version`` answer, for clients to adapt to.
FEATURES = (PACKED_ROWS,)
PACKED_ROW = np.dtype("<i8")


class _CheckedRows(tuple):
    """Row numbers already checked as a whole (unpacked from the wire): ``TableTicket``
    keeps them without checking each one again, and ``array`` holds them as int64."""

    array: np.ndarray


def pack_rows(rows: Sequence[int]) -> dict[str, str]:
    """A row list's wire form: ``{"int64_le_hex": hex of the little-endian int64 values}``.

    A ticket of 100,000 rows encodes in ~8 ms and decodes and checks in ~9 ms, where with
    a JSON list it took ~11 and ~24 ms (hex, not base64: CPython decodes hex 3.5x faster;
    the 1% row list of bench/perf.py at 10M rows, timed with ``timeit``).
    """
    return {PACKED_ROWS: np.asarray(rows, dtype=PACKED_ROW).tobytes().hex()}


def unpack_rows(obj: Mapping[str, Any]) -> tuple[int, ...]:
    """The row numbers of ``{"int64_le_hex": ...}``, checked: hex digits only, whole int64s,
    at most :data:`MAX_ROW_LIST`, none negative; ProtocolError naming what is wrong."""
    _reject_unknown(obj, {PACKED_ROWS}, "packed rows")
    text = obj.get(PACKED_ROWS)
    what = f"rows.{PACKED_ROWS}"
    if not isinstance(text, str):
        raise ProtocolError(f"{what} must be a string of hex digits: the row numbers as "
                            "little-endian int64")
    if len(text) > 2 * PACKED_ROW.itemsize * MAX_ROW_LIST:  # before decoding it
        raise ProtocolError(f"a row list may hold at most {MAX_ROW_LIST} rows, got more: "
                            "select a range instead")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ProtocolError(f"{what} is not hex (pairs of 0-9, a-f): {echo(text, 60)}") from None
    if 2 * len(raw) != len(text):  # bytes.fromhex skips whitespace: refuse it instead
        raise ProtocolError(f"{what} holds characters other than hex digits: {echo(text, 60)}")
    if len(raw) % PACKED_ROW.itemsize:
        raise ProtocolError(f"{what} holds {len(raw)} bytes, not whole 8-byte row numbers")
    values = np.frombuffer(raw, dtype=PACKED_ROW)
    if len(values) and values.min() < 0:
        bad = int(values[np.argmax(values < 0)])
        raise ProtocolError(f"row number must be between 0 and {MAX_INT64}, got {bad}")
    rows = _CheckedRows(values.tolist())
    rows.array = values
    return rows


def came_packed(rows: Any) -> bool:
    """Whether a decoded ticket's row list came packed (``int64_le_hex``), not as a list."""
    return type(rows) is _CheckedRows


def row_array(rows: Sequence[int]) -> np.ndarray:
    """Row numbers as an int64 array: as they were unpacked, or converted."""
    array = getattr(rows, "array", None)
    return array if isinstance(array, np.ndarray) else np.asarray(rows, dtype=np.int64)


def check_text(value: Any, what: str, limit: int = MAX_TEXT_CHARS, *,
               allow_nul: bool = True) -> str:
    """A string of at most ``limit`` characters that is valid Unicode (no lone surrogates)."""
    if not isinstance(value, str):
        raise ProtocolError(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise ProtocolError(f"{what} is longer than {limit} characters: {echo(value)}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError(f"{what} is not valid Unicode (a lone surrogate): "
                                f"{echo(value)}") from None
    if not allow_nul and "\0" in value:
        raise ProtocolError(f"{what} must not contain a NUL character: {echo(value)}")
    return value


def check_name(value: Any, what: str) -> str:
    """A table, file or column name: non-blank text, no NUL, at most MAX_NAME_CHARS."""
    name = check_text(value, what, MAX_NAME_CHARS, allow_nul=False)
    if not name.strip():
        raise ProtocolError(f"{what} must not be empty")
    return name


def _check_object(file_id: Any, annotation_id: Any) -> tuple[int | None, int | None]:
    if file_id is not None and annotation_id is not None:
        raise ProtocolError("give either file_id or annotation_id, not both")
    if file_id is None and annotation_id is None:
        raise ProtocolError("a file_id or an annotation_id is required")
    if file_id is not None:
        return _check_id(file_id, "file_id"), None
    return None, _check_id(annotation_id, "annotation_id")


#: Any run of more than MAX_NUMBER_DIGITS digits, found as a run of zeros once every digit
#: is a zero: ``bytes.translate`` and a substring search, 15x faster than a regex on long
#: row lists (a 100,000-row list: ~1 ms against ~16 ms).
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * (MAX_NUMBER_DIGITS + 1)


def _has_long_number(raw: bytes) -> bool:
    return _LONG_DIGITS in raw.translate(_DIGITS_AS_ZERO)


def _parse_int(text: str) -> int:
    digits = len(text) - text.startswith("-")
    if digits > MAX_NUMBER_DIGITS:
        raise ProtocolError(f"a number has {digits} digits; at most {MAX_NUMBER_DIGITS} "
                            "are allowed")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > 4 * MAX_NUMBER_DIGITS:
        raise ProtocolError(f"a number is {len(text)} characters long; at most "
                            f"{4 * MAX_NUMBER_DIGITS} are allowed")
    return float(text)


def _no_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not JSON: send numbers only")


_SCALARS = {int, float, bool, type(None)}


def _check_tree(obj: Any, what: str) -> None:
    """Depth of nested arrays and objects, and every string a valid one (keys too)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            check_text(node, f"a string in the {what}", MAX_REQUEST_BYTES)
            continue
        if not isinstance(node, (list, dict)):
            continue
        if depth > MAX_JSON_DEPTH:
            raise ProtocolError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(node, dict):
            for key, value in node.items():
                check_text(key, f"a key in the {what}", MAX_NAME_CHARS)
                stack.append((value, depth + 1))
        elif set(map(type, node)) - _SCALARS:
            stack.extend((value, depth + 1) for value in node
                         if isinstance(value, (str, list, dict)))


def decode_json(raw: bytes | str, what: str, *, limits: bool = True) -> Any:
    """Parse request JSON with every size limit checked before or while parsing.

    ``limits=False`` (a server's answer, read by the client) keeps the strict
    parsing but lifts the size limits.
    """
    if isinstance(raw, str):
        try:
            raw = raw.encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError(f"{what} is not valid UTF-8") from None
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"{what} must be bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if limits:
        if len(raw) > MAX_REQUEST_BYTES:
            raise ProtocolError(f"{what} is {len(raw)} bytes; at most {MAX_REQUEST_BYTES} "
                                "are allowed")
        if raw.count(b",") >= MAX_JSON_VALUES:
            raise ProtocolError(f"{what} holds more than {MAX_JSON_VALUES} values")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} is not valid UTF-8") from None
    # Numbers are parsed by the checking hooks only when a long run of digits exists at all
    # (the hooks cost a Python call per number; a 1M-entry row list would pay for nothing).
    hooks: dict[str, Any] = {"parse_constant": _no_constant}
    if _has_long_number(raw):
        hooks.update(parse_int=_parse_int, parse_float=_parse_float)
    try:
        obj = json.loads(text, **hooks)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"{what} is not valid JSON: {exc.msg} at character "
                            f"{exc.pos}") from None
    except RecursionError:
        raise ProtocolError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # ProtocolError from a hook, or int()'s own digit limit
        raise ProtocolError(f"{what}: {exc}") from None
    _check_tree(obj, what)
    return obj


def _decode_json(raw: bytes | str, what: str, *, limits: bool = True) -> dict[str, Any]:
    obj = decode_json(raw, what, limits=limits)
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    version = obj.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"{what} has protocol version {echo(version)}; this side speaks {PROTOCOL_VERSION}"
        )
    return obj


def _reject_unknown(obj: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ProtocolError(f"{what} has unknown field(s): {echo(', '.join(unknown))}")


class _Message:
    """What every ticket and descriptor shares: its JSON form, and that as bytes."""

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Request:
        raise NotImplementedError

    def encode(self) -> bytes:
        return _encoded(self.to_json())


def _encoded(obj: Mapping[str, Any]) -> bytes:
    """A request's JSON as bytes, refused (ProtocolError) above MAX_REQUEST_BYTES."""
    raw = json.dumps(obj, separators=(",", ":")).encode()
    if len(raw) > MAX_REQUEST_BYTES:
        raise ProtocolError(f"this request is {len(raw)} bytes; at most "
                            f"{MAX_REQUEST_BYTES} are allowed (select rows by range)")
    return raw


def _links_from_json(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    links = obj.get("links") or []
    if not isinstance(links, list):
        raise ProtocolError("links must be a list of [type, id] pairs")
    if len(links) > MAX_LINKS:
        raise ProtocolError(f"{len(links)} links; at most {MAX_LINKS} are allowed")
    return tuple(tuple(x) if isinstance(x, list) else x for x in links)


@dataclass(frozen=True)
class RowRange:
    """Rows ``start`` (inclusive) to ``stop`` (exclusive); ``stop=None`` means to the end."""

    start: int = 0
    stop: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "stop": self.stop}


@dataclass(frozen=True)
class TableTicket(_Message):
    """A read of one OMERO.table: the body of a ``do_get`` ticket or a descriptor command."""

    file_id: int | None = None
    annotation_id: int | None = None
    columns: tuple[str, ...] | None = None
    rows: RowRange | tuple[int, ...] | None = None
    query: str | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)
    chunk_size: int | None = None
    row_numbers: bool = True
    #: Set by the bridge on an endpoint's ticket: what it may read, for whom, until when,
    #: signed with the replicas' shared key (flight_server/tickets.py). Clients leave it.
    grant: Mapping[str, Any] | None = None

    kind = "table"

    def __post_init__(self) -> None:
        fid, aid = _check_object(self.file_id, self.annotation_id)
        object.__setattr__(self, "file_id", fid)
        object.__setattr__(self, "annotation_id", aid)
        if self.columns is not None:
            if isinstance(self.columns, (str, bytes)):
                raise ProtocolError("columns must be a list of names, not one string")
            cols = tuple(self.columns)
            if len(cols) > MAX_COLUMNS:
                raise ProtocolError(f"{len(cols)} columns named; at most {MAX_COLUMNS} "
                                    "are allowed")
            for c in cols:
                check_text(c, "a column name", MAX_NAME_CHARS)
            object.__setattr__(self, "columns", cols)
        if self.rows is not None and self.query is not None:
            raise ProtocolError("rows and query cannot be combined: give one or the other")
        if self.rows is not None and not isinstance(self.rows, RowRange):
            if isinstance(self.rows, (str, bytes)):
                raise ProtocolError("rows must be a list of row numbers or {start, stop}")
            rows: tuple[int, ...]
            if type(self.rows) is _CheckedRows and hasattr(self.rows, "array"):
                rows = self.rows  # unpacked and checked (unpack_rows)
            else:
                rows = tuple(self.rows)
                if len(rows) > MAX_ROW_LIST:
                    raise ProtocolError(f"a row list may hold at most {MAX_ROW_LIST} rows, "
                                        f"got {len(rows)}: select a range instead")
                rows = _check_rows(rows)
            object.__setattr__(self, "rows", rows)
        if isinstance(self.rows, RowRange):
            start = _check_row(self.rows.start, "rows.start")
            stop = None if self.rows.stop is None else _check_row(self.rows.stop, "rows.stop")
            if stop is not None and stop < start:
                raise ProtocolError(f"rows.stop ({stop}) is before rows.start ({start})")
            object.__setattr__(self, "rows", RowRange(start, stop))
        if self.query is not None:
            check_text(self.query, "query", MAX_QUERY_CHARS)
        if not isinstance(self.variables, Mapping):
            raise ProtocolError("variables must be an object mapping names to values")
        if len(self.variables) > MAX_VARIABLES:
            raise ProtocolError(f"{len(self.variables)} variables; at most {MAX_VARIABLES} "
                                "are allowed")
        for name, value in self.variables.items():
            check_text(name, "a variable name", MAX_NAME_CHARS)
            if isinstance(value, str):
                check_text(value, f"variable {echo(name, 60)}", MAX_NAME_CHARS)
            elif isinstance(value, bool) or isinstance(value, float):
                pass
            elif isinstance(value, int):
                _check_int(value, f"variable {echo(name, 60)}", -MAX_INT64 - 1)
            else:
                raise ProtocolError(
                    f"variable {echo(name, 60)} must be a number, a boolean or a column name, "
                    f"got {type(value).__name__}"
                )
        if self.chunk_size is not None:
            object.__setattr__(self, "chunk_size",
                               _check_int(self.chunk_size, "chunk_size", 1, MAX_CHUNK_ROWS))
        if not isinstance(self.row_numbers, bool):
            raise ProtocolError("row_numbers must be true or false")
        if self.grant is not None and not isinstance(self.grant, Mapping):
            raise ProtocolError("grant must be an object (as the bridge issued it)")

    def to_json(self, packed_rows: bool = True) -> dict[str, Any]:
        """The ticket's JSON; a row list packed (``int64_le_hex``), or with
        ``packed_rows=False`` a JSON list, which every bridge reads (one whose ``version``
        action lists no ``int64_le_hex`` feature reads only that)."""
        rows: Any = None
        if isinstance(self.rows, RowRange):
            rows = self.rows.to_json()
        elif self.rows is not None:
            rows = pack_rows(self.rows) if packed_rows else list(self.rows)
        return {
            "v": PROTOCOL_VERSION,
            "kind": self.kind,
            "file_id": self.file_id,
            "annotation_id": self.annotation_id,
            "columns": None if self.columns is None else list(self.columns),
            "rows": rows,
            "query": self.query,
            "variables": dict(self.variables),
            "chunk_size": self.chunk_size,
            "row_numbers": self.row_numbers,
        } | ({} if self.grant is None else {"grant": dict(self.grant)})

    def encode(self, packed_rows: bool = True) -> bytes:
        """The ticket as bytes (see :meth:`to_json` for ``packed_rows``)."""
        return _encoded(self.to_json(packed_rows))

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TableTicket:
        allowed = {"v", "kind", "file_id", "annotation_id", "columns", "rows", "query",
                   "variables", "chunk_size", "row_numbers", "grant"}
        _reject_unknown(obj, allowed, "table ticket")
        rows = obj.get("rows")
        if isinstance(rows, Mapping) and PACKED_ROWS in rows:
            rows = unpack_rows(rows)
        elif isinstance(rows, Mapping):
            _reject_unknown(rows, {"start", "stop"}, "rows range")
            start = rows.get("start")
            rows = RowRange(0 if start is None else start, rows.get("stop"))
        elif rows is not None and not isinstance(rows, list):
            raise ProtocolError('rows must be a list of row numbers, {"int64_le_hex": ...} '
                                'or {start, stop}')
        columns = obj.get("columns")
        if columns is not None and not isinstance(columns, list):
            raise ProtocolError("columns must be a list of names")
        row_numbers = obj.get("row_numbers", True)
        if not isinstance(row_numbers, bool):
            raise ProtocolError("row_numbers must be true or false")
        return cls(
            file_id=obj.get("file_id"),
            annotation_id=obj.get("annotation_id"),
            columns=None if columns is None else tuple(columns),
            rows=tuple(rows) if isinstance(rows, list) else rows,  # _CheckedRows kept as is
            query=obj.get("query"),
            variables=obj.get("variables") or {},
            chunk_size=obj.get("chunk_size"),
            row_numbers=row_numbers,
            grant=obj.get("grant"),
        )


@dataclass(frozen=True)
class FileTicket(_Message):
    """A read of a plain OriginalFile (CSV, CSV.gz, ...), streamed as binary chunks."""

    file_id: int | None = None
    annotation_id: int | None = None
    chunk_size: int | None = None  # bytes per record batch
    check_type: bool = True  # refuse files that are not CSV or CSV.gz

    kind = "file"

    def __post_init__(self) -> None:
        fid, aid = _check_object(self.file_id, self.annotation_id)
        object.__setattr__(self, "file_id", fid)
        object.__setattr__(self, "annotation_id", aid)
        if self.chunk_size is not None:
            object.__setattr__(self, "chunk_size", _check_int(
                self.chunk_size, "chunk_size", 1, MAX_FILE_CHUNK_BYTES))
        if not isinstance(self.check_type, bool):
            raise ProtocolError("check_type must be true or false")

    def to_json(self) -> dict[str, Any]:
        return {
            "v": PROTOCOL_VERSION,
            "kind": self.kind,
            "file_id": self.file_id,
            "annotation_id": self.annotation_id,
            "chunk_size": self.chunk_size,
            "check_type": self.check_type,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> FileTicket:
        _reject_unknown(obj, {"v", "kind", "file_id", "annotation_id", "chunk_size",
                              "check_type"}, "file ticket")
        return cls(
            file_id=obj.get("file_id"),
            annotation_id=obj.get("annotation_id"),
            chunk_size=obj.get("chunk_size"),
            check_type=obj.get("check_type", True),
        )


def normalize_links(links: Iterable[Sequence[Any]]) -> tuple[tuple[str, int], ...]:
    """Check ``(type, id)`` pairs and spell each type as OMERO does (``"image"`` -> ``"Image"``)."""
    canonical = {t.lower(): t for t in LINK_TYPES}
    if isinstance(links, (str, bytes, Mapping)):
        raise ProtocolError("links must be a list of (type, id) pairs")
    out: dict[tuple[str, int], None] = {}  # ordered, and a linear duplicate check
    for count, link in enumerate(links, 1):
        if count > MAX_LINKS:
            raise ProtocolError(f"too many links: at most {MAX_LINKS} are allowed")
        if isinstance(link, (str, bytes, Mapping)) or not isinstance(link, Sequence) \
                or len(link) != 2:
            raise ProtocolError(f"a link must be a (type, id) pair, got {echo(link)}")
        kind, obj_id = link
        if not isinstance(kind, str) or kind.lower() not in canonical:
            raise ProtocolError(
                f"cannot link a table to {echo(kind)}: supported types are "
                f"{', '.join(LINK_TYPES)}"
            )
        out[(canonical[kind.lower()], _check_id(obj_id, f"{canonical[kind.lower()]} id"))] = None
    return tuple(out)


@dataclass(frozen=True)
class UploadDescriptor(_Message):
    """The ``do_put`` descriptor command: create a new table and link it."""

    name: str
    links: tuple[tuple[str, int], ...] = ()
    description: str = ""
    format: str = "hdf5"
    explicit_commit: bool = False  # see COMMIT_METADATA

    kind = "upload"

    def __post_init__(self) -> None:
        check_name(self.name, "the table name")
        object.__setattr__(self, "links", normalize_links(self.links))
        check_text(self.description, "description")
        if self.format not in ("hdf5", "tiledb"):
            raise ProtocolError(f"unknown table format {echo(self.format)}: "
                                "use 'hdf5' or 'tiledb'")
        if not isinstance(self.explicit_commit, bool):
            raise ProtocolError("explicit_commit must be true or false")

    def to_json(self) -> dict[str, Any]:
        return {
            "v": PROTOCOL_VERSION,
            "kind": self.kind,
            "name": self.name,
            "links": [list(link) for link in self.links],
            "description": self.description,
            "format": self.format,
            "explicit_commit": self.explicit_commit,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> UploadDescriptor:
        _reject_unknown(obj, {"v", "kind", "name", "links", "description", "format",
                              "explicit_commit"}, "upload descriptor")
        return cls(
            name=obj.get("name", ""),
            links=_links_from_json(obj),
            description=obj.get("description") or "",
            format=obj.get("format", "hdf5"),
            explicit_commit=obj.get("explicit_commit", False),
        )


@dataclass(frozen=True)
class FileUploadDescriptor(_Message):
    """The ``do_put`` descriptor command that stores a plain file (CSV, CSV.gz, ...).

    The stream has one ``binary`` column, ``data``: the file's bytes in order.
    """

    name: str
    links: tuple[tuple[str, int], ...] = ()
    mimetype: str = ""
    explicit_commit: bool = False  # see COMMIT_METADATA

    kind = "file_upload"

    def __post_init__(self) -> None:
        check_name(self.name, "the file name")
        if "/" in self.name:
            raise ProtocolError(f"a file name must not contain '/': {echo(self.name)}")
        object.__setattr__(self, "links", normalize_links(self.links))
        check_text(self.mimetype, "mimetype", MAX_NAME_CHARS)
        if not isinstance(self.explicit_commit, bool):
            raise ProtocolError("explicit_commit must be true or false")

    def to_json(self) -> dict[str, Any]:
        return {
            "v": PROTOCOL_VERSION,
            "kind": self.kind,
            "name": self.name,
            "links": [list(link) for link in self.links],
            "mimetype": self.mimetype,
            "explicit_commit": self.explicit_commit,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> FileUploadDescriptor:
        _reject_unknown(obj, {"v", "kind", "name", "links", "mimetype", "explicit_commit"},
                        "file upload descriptor")
        return cls(
            name=obj.get("name", ""),
            links=_links_from_json(obj),
            mimetype=obj.get("mimetype") or "",
            explicit_commit=obj.get("explicit_commit", False),
        )


Request = TableTicket | FileTicket | UploadDescriptor | FileUploadDescriptor

_KINDS: dict[str, type[_Message]] = {
    "table": TableTicket,
    "file": FileTicket,
    "upload": UploadDescriptor,
    "file_upload": FileUploadDescriptor,
}


def decode(raw: bytes | str, what: str = "ticket") -> Request:
    """Parse a ticket or descriptor command, raising :class:`ProtocolError` on any fault."""
    obj = _decode_json(raw, what)
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise ProtocolError(f"{what} kind must be one of {sorted(_KINDS)}, got {echo(kind)}")
    return _KINDS[kind].from_json(obj)


def encode_body(**fields: Any) -> bytes:
    """JSON body for an action, with the protocol version added."""
    return json.dumps({"v": PROTOCOL_VERSION, **fields}, separators=(",", ":")).encode()


def decode_body(raw: bytes, what: str = "action body", *,
                allowed: Iterable[str] | None = None, limits: bool = True) -> dict[str, Any]:
    """Parse an action body or result; an empty body is an empty object.

    ``allowed``: the fields a request may carry (besides ``v``); others are refused, as
    in tickets. ``limits=False`` for a server's answer read by the client.
    """
    if not raw:
        return {}
    obj = _decode_json(raw, what, limits=limits)
    if allowed is not None:
        _reject_unknown(obj, {"v", *allowed}, what)
    return obj
