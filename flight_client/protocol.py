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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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

MAX_ROW_LIST = 10_000_000

#: With ``explicit_commit`` in an upload descriptor, the client sends this as
#: app metadata (``writer.write_metadata(COMMIT_METADATA)``) after the last
#: batch; a stream that ends without it is discarded. That tells a finished
#: upload from a client that gave up half way and closed its stream cleanly.
COMMIT_METADATA = b'{"v":1,"commit":true}'


class ProtocolError(ValueError):
    """A ticket, descriptor or action body that does not follow the protocol."""


def _check_id(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        raise ProtocolError(f"{what} must be an integer, got {value!r}")
    if value < 0:
        raise ProtocolError(f"{what} must not be negative, got {value}")
    return value


def _check_object(file_id: Any, annotation_id: Any) -> tuple[int | None, int | None]:
    if file_id is not None and annotation_id is not None:
        raise ProtocolError("give either file_id or annotation_id, not both")
    if file_id is None and annotation_id is None:
        raise ProtocolError("a file_id or an annotation_id is required")
    if file_id is not None:
        return _check_id(file_id, "file_id"), None
    return None, _check_id(annotation_id, "annotation_id")


def _decode_json(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    version = obj.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"{what} has protocol version {version!r}; this side speaks {PROTOCOL_VERSION}"
        )
    return obj


def _reject_unknown(obj: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ProtocolError(f"{what} has unknown field(s): {', '.join(unknown)}")


class _Message:
    """What every ticket and descriptor shares: its JSON form, and that as bytes."""

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()


def _links_from_json(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    links = obj.get("links") or []
    if not isinstance(links, list):
        raise ProtocolError("links must be a list of [type, id] pairs")
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

    kind = "table"

    def __post_init__(self) -> None:
        fid, aid = _check_object(self.file_id, self.annotation_id)
        object.__setattr__(self, "file_id", fid)
        object.__setattr__(self, "annotation_id", aid)
        if self.columns is not None:
            cols = tuple(self.columns)
            for c in cols:
                if not isinstance(c, str):
                    raise ProtocolError(f"column names must be strings, got {c!r}")
            object.__setattr__(self, "columns", cols)
        if self.rows is not None and self.query is not None:
            raise ProtocolError("rows and query cannot be combined: give one or the other")
        if self.rows is not None and not isinstance(self.rows, RowRange):
            rows = tuple(self.rows)
            if len(rows) > MAX_ROW_LIST:
                raise ProtocolError(f"a row list may hold at most {MAX_ROW_LIST} rows")
            object.__setattr__(self, "rows", tuple(_check_id(r, "row number") for r in rows))
        if isinstance(self.rows, RowRange):
            start = _check_id(self.rows.start, "rows.start")
            stop = None if self.rows.stop is None else _check_id(self.rows.stop, "rows.stop")
            if stop is not None and stop < start:
                raise ProtocolError(f"rows.stop ({stop}) is before rows.start ({start})")
        if self.query is not None and not isinstance(self.query, str):
            raise ProtocolError("query must be a string")
        if not isinstance(self.variables, Mapping):
            raise ProtocolError("variables must be an object mapping names to values")
        for name, value in self.variables.items():
            if not isinstance(name, str):
                raise ProtocolError(f"variable names must be strings, got {name!r}")
            if not isinstance(value, (int, float, str, bool)):
                raise ProtocolError(
                    f"variable {name!r} must be a number, a boolean or a column name, "
                    f"got {type(value).__name__}"
                )
        if self.chunk_size is not None:
            size = _check_id(self.chunk_size, "chunk_size")
            if size == 0:
                raise ProtocolError("chunk_size must be positive")
            object.__setattr__(self, "chunk_size", size)

    def to_json(self) -> dict[str, Any]:
        rows: Any = None
        if isinstance(self.rows, RowRange):
            rows = self.rows.to_json()
        elif self.rows is not None:
            rows = list(self.rows)
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
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TableTicket:
        allowed = {"v", "kind", "file_id", "annotation_id", "columns", "rows", "query",
                   "variables", "chunk_size", "row_numbers"}
        _reject_unknown(obj, allowed, "table ticket")
        rows = obj.get("rows")
        if isinstance(rows, Mapping):
            _reject_unknown(rows, {"start", "stop"}, "rows range")
            rows = RowRange(rows.get("start", 0), rows.get("stop"))
        elif rows is not None and not isinstance(rows, list):
            raise ProtocolError("rows must be a list of row numbers or {start, stop}")
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
            rows=rows,
            query=obj.get("query"),
            variables=obj.get("variables") or {},
            chunk_size=obj.get("chunk_size"),
            row_numbers=row_numbers,
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
            size = _check_id(self.chunk_size, "chunk_size")
            if size == 0:
                raise ProtocolError("chunk_size must be positive")
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
    out: list[tuple[str, int]] = []
    for link in links:
        if isinstance(link, (str, bytes)) or len(link) != 2:
            raise ProtocolError(f"a link must be a (type, id) pair, got {link!r}")
        kind, obj_id = link
        if not isinstance(kind, str) or kind.lower() not in canonical:
            raise ProtocolError(
                f"cannot link a table to {kind!r}: supported types are {', '.join(LINK_TYPES)}"
            )
        pair = (canonical[kind.lower()], _check_id(obj_id, f"{kind} id"))
        if pair not in out:
            out.append(pair)
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
        if not isinstance(self.name, str) or not self.name.strip():
            raise ProtocolError(f"invalid table name: {self.name!r}")
        object.__setattr__(self, "links", normalize_links(self.links))
        if self.format not in ("hdf5", "tiledb"):
            raise ProtocolError(f"unknown table format {self.format!r}: use 'hdf5' or 'tiledb'")
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
        if not isinstance(self.name, str) or not self.name.strip() or "/" in self.name:
            raise ProtocolError(f"invalid file name: {self.name!r}")
        object.__setattr__(self, "links", normalize_links(self.links))
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

_KINDS: dict[str, type] = {
    "table": TableTicket,
    "file": FileTicket,
    "upload": UploadDescriptor,
    "file_upload": FileUploadDescriptor,
}


def decode(raw: bytes | str, what: str = "ticket") -> Request:
    """Parse a ticket or descriptor command, raising :class:`ProtocolError` on any fault."""
    obj = _decode_json(raw, what)
    kind = obj.get("kind")
    if kind not in _KINDS:
        raise ProtocolError(f"{what} kind must be one of {sorted(_KINDS)}, got {kind!r}")
    return _KINDS[kind].from_json(obj)


def encode_body(**fields: Any) -> bytes:
    """JSON body for an action, with the protocol version added."""
    return json.dumps({"v": PROTOCOL_VERSION, **fields}, separators=(",", ":")).encode()


def decode_body(raw: bytes, what: str = "action body") -> dict[str, Any]:
    """Parse an action body or result; an empty body is an empty object."""
    if not raw:
        return {}
    return _decode_json(raw, what)
