"""Arguments to messages: the one place a call's arguments become a ticket or descriptor.

Every read, download, file call and upload turns its omero2pandas-style
arguments into a :mod:`flight_protocol.messages` message here, checked before
any network call. This module owns the one translation of the protocol's
:class:`~flight_protocol.messages.ProtocolError` into the client's
:class:`~flight_client.errors.InvalidRequest` (:func:`checked`) and the one
``chunk_size`` check (:func:`check_chunk_size`).

The read parameters are written once, as :class:`Selection`; the public
functions take them as keywords (``**selection``) or, as omero2pandas does,
positionally in :data:`READ_ORDER` (see :func:`split_arguments`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypedDict, TypeVar

import numpy as np

from flight_client import errors
from flight_client.details import LOGIN_NAMES, LOGIN_ORDER, Login
from flight_protocol.messages import (
    FileTicket,
    FileUploadDescriptor,
    ProtocolError,
    RowRange,
    TableTicket,
    UploadDescriptor,
    normalize_links,
)

F = TypeVar("F", bound=Callable[..., Any])


class TableId(TypedDict, total=False):
    """Which table: its OriginalFile id (``file_id``) or its FileAnnotation id
    (``annotation_id``), exactly one."""

    file_id: int | str | None
    annotation_id: int | str | None


class Selection(TableId, total=False):
    """What a read selects: the parameters every read function shares.

    ``file_id`` / ``annotation_id``: the table's OriginalFile or FileAnnotation id
    (exactly one). ``column_names``: the columns to read, in table order (default:
    all). ``rows``: any iterable of row numbers (a step-1 ``range`` is sent
    compactly). ``chunk_size``: rows per batch (default: the bridge chooses).
    ``query``: a PyTables condition (``"(area>20) & (id<50)"``) with
    ``variables`` (plain values or omero rtypes; a string names a column); a
    query and ``rows`` exclude each other.
    """

    column_names: Iterable[str] | str | None
    rows: Iterable[int] | None
    chunk_size: int | None
    query: str | None
    variables: Mapping[str, Any] | None


class ReadArguments(Selection, Login, total=False):
    """A read function's arguments: the :class:`Selection` and the :class:`Login`."""


class TableArguments(TableId, Login, total=False):
    """A table-level call's arguments (its size, its columns): the table and the login."""


#: omero2pandas' positional order of ``read_table``'s parameters (``download_table``
#: takes the target path first, then the same).
READ_ORDER: tuple[str, ...] = (
    "file_id", "annotation_id", "column_names", "rows", "chunk_size", *LOGIN_ORDER,
    "query", "variables",
)
#: omero2pandas' positional order of ``get_table_size`` and ``get_table_columns``.
TABLE_ORDER: tuple[str, ...] = ("file_id", "annotation_id", *LOGIN_ORDER)
SELECTION_NAMES: frozenset[str] = Selection.__required_keys__ | Selection.__optional_keys__
_DEFAULTS: dict[str, Any] = {"column_names": ()}


def split_arguments(args: Sequence[Any], kwargs: Mapping[str, Any],
                    order: Sequence[str] = READ_ORDER,
                    aliases: Mapping[str, str] | None = None) -> tuple[Selection, Login]:
    """Positional and keyword arguments as a :class:`Selection` and a :class:`Login`.

    ``args`` are matched with ``order``, the names the function takes;
    ``aliases`` maps another spelling (``columns``) to one of them. Unknown or
    repeated names raise TypeError, as Python does for a written-out signature.
    """
    if len(args) > len(order):
        raise TypeError(f"takes at most {len(order)} positional arguments "
                        f"({len(args)} given)")
    given: dict[str, Any] = dict(zip(order, args, strict=False))
    for name, value in kwargs.items():
        name = (aliases or {}).get(name, name)
        if name in given:
            raise TypeError(f"got multiple values for argument {name!r}")
        given[name] = value
    unknown = sorted(set(given) - set(order))
    if unknown:
        raise TypeError(f"got an unexpected keyword argument {unknown[0]!r}")
    selection: dict[str, Any] = {k: v for k, v in given.items() if k in SELECTION_NAMES}
    login: dict[str, Any] = {k: v for k, v in given.items() if k in LOGIN_NAMES}
    return Selection(**selection), Login(**login)  # type: ignore[typeddict-item]


def takes_read_arguments(order: Sequence[str] = READ_ORDER, before: Sequence[str] = ()
                         ) -> Callable[[F], F]:
    """Give a ``(*args, **kwargs)`` read function the signature ``help()`` shows.

    The parameters are ``before`` (e.g. ``target_path``), then ``order`` (each
    defaulting to None, ``column_names`` to ``()``), then the function's own
    keyword-only parameters.
    """
    def decorate(fn: F) -> F:
        own = [p for p in inspect.signature(fn).parameters.values()
               if p.kind is inspect.Parameter.KEYWORD_ONLY]
        params = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                  for name in before]
        params += [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                     default=_DEFAULTS.get(name))
                   for name in order]
        fn.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            params + own, return_annotation=inspect.signature(fn).return_annotation)
        return fn

    return decorate


# -- the one translation and the one chunk_size check ------------------------------------------
@contextmanager
def checked() -> Iterator[None]:
    """A protocol message refused while being built is the caller's InvalidRequest."""
    try:
        yield
    except ProtocolError as exc:
        raise errors.InvalidRequest(str(exc)) from None


def check_chunk_size(chunk_size: Any, unit: str = "rows", *, optional: bool = True) -> None:
    """``chunk_size`` must be a positive integer (``None`` allowed when ``optional``)."""
    if chunk_size is None and optional:
        return
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer) \
            or chunk_size <= 0:
        what = "a positive number of bytes" if unit == "bytes" else "a positive integer"
        raise errors.InvalidRequest(f"chunk_size must be {what}, got {chunk_size!r}")


# -- pieces of a read --------------------------------------------------------------------------
def _row_selection(rows: Iterable[int] | None) -> RowRange | tuple[int, ...] | None:
    if rows is None:
        return None
    if isinstance(rows, range) and rows.step == 1 and rows.start >= 0:
        return RowRange(rows.start, max(rows.stop, rows.start))
    if isinstance(rows, str | bytes | int | float) or not isinstance(rows, Iterable):
        raise errors.InvalidRequest(
            f"rows must be an iterable of row numbers (e.g. a list or range), got {rows!r}"
        )
    if isinstance(rows, np.ndarray) and rows.ndim == 1 and rows.dtype.kind in "iu":
        items: list[Any] = rows.tolist()  # Python ints, in one C pass
    else:
        items = list(rows)
    # The usual case, plain non-negative ints, is checked in C-speed passes (a 100,000-row
    # list in ~2 ms); anything else element by element, naming the first bad one.
    if set(map(type, items)) <= {int} and (not items or min(items) >= 0):
        return tuple(items)
    out = []
    for r in items:
        if isinstance(r, np.generic):
            r = r.item()  # a numpy scalar as its Python value (and shown as one)
        if isinstance(r, bool) or not isinstance(r, int):
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


def column_selection(column_names: Iterable[str] | str | None) -> tuple[str, ...] | None:
    """The selected column names (None: all)."""
    if column_names is None:
        return None
    if isinstance(column_names, str):
        return (column_names,)
    names = tuple(column_names)
    for name in names:
        if not isinstance(name, str):
            raise errors.InvalidRequest(f"column names must be strings, got {name!r}")
    return names or None


def object_id(value: Any, what: str) -> int | None:
    """An OMERO object id (an integer, or a string of digits), None when not given."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise errors.InvalidRequest(f"{what} must be an integer, got {value!r}")
    return int(value)


def object_ids(file_id: Any, annotation_id: Any) -> tuple[int | None, int | None]:
    """Check a (file_id, annotation_id) pair as omero2pandas does: exactly one is needed."""
    fid, aid = object_id(file_id, "file_id"), object_id(annotation_id, "annotation_id")
    if fid is not None and aid is not None:
        raise errors.InvalidRequest("supply either a file_id or an annotation_id, not both")
    if fid is None and aid is None:
        raise errors.InvalidRequest("a file_id or an annotation_id must be supplied")
    return fid, aid


# -- messages ----------------------------------------------------------------------------------
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
    check_chunk_size(chunk_size)
    if query is not None and not isinstance(query, str):
        raise errors.InvalidRequest(f"query must be a string, got {type(query).__name__}")
    with checked():
        return TableTicket(
            file_id=fid,
            annotation_id=aid,
            columns=column_selection(column_names),
            rows=_row_selection(rows),
            query=query,
            variables=_plain_variables(variables),
            chunk_size=None if chunk_size is None else int(chunk_size),
            row_numbers=row_numbers,
        )


def selection_ticket(selection: Selection, row_numbers: bool = True) -> TableTicket:
    """:func:`table_ticket` for a :class:`Selection`."""
    return table_ticket(row_numbers=row_numbers, **selection)


def file_ticket(file_id: Any, annotation_id: Any, chunk_size: Any,
                check_type: bool) -> FileTicket:
    """The ticket for a plain file's bytes, ``chunk_size`` bytes per message."""
    fid, aid = object_ids(file_id, annotation_id)
    check_chunk_size(chunk_size, "bytes", optional=False)
    with checked():
        return FileTicket(fid, aid, int(chunk_size), bool(check_type))


def links(pairs: Iterable[Any]) -> tuple[tuple[str, int], ...]:
    """``(type, id)`` pairs checked and spelled as OMERO does."""
    with checked():
        return normalize_links(pairs)


def upload_links(links_arg: Any, parent_id: Any, parent_type: str
                 ) -> tuple[tuple[str, int], ...]:
    """omero2pandas' link rules: a bare ``("Image", 1)`` pair is accepted, parent added."""
    if links_arg is None:
        items: list[Any] = []
    elif (isinstance(links_arg, Sequence) and len(links_arg) == 2
          and isinstance(links_arg[0], str) and not isinstance(links_arg[1], str | Sequence)):
        items = [tuple(links_arg)]
    elif isinstance(links_arg, str | bytes) or not isinstance(links_arg, Iterable):
        raise errors.InvalidRequest(
            f"links should be a list of (type, id) pairs, not {type(links_arg).__name__}"
        )
    else:
        items = [tuple(link) if isinstance(link, list) else link for link in links_arg]
    if parent_id is not None:
        items.append((parent_type, parent_id))
    if not items:
        raise errors.InvalidRequest(
            "no OMERO objects to link the table to: give parent_id (and parent_type) or links"
        )
    return links(items)


def table_name(name: Any) -> str:
    """A table's name: a non-blank string."""
    if not isinstance(name, str) or not name.strip():
        raise errors.InvalidRequest(f"invalid table name: {name!r}")
    return name


def upload_descriptor(name: str, pairs: tuple[tuple[str, int], ...],
                      description: str = "") -> UploadDescriptor:
    """The descriptor of a table upload, committed explicitly (see the transport)."""
    with checked():
        return UploadDescriptor(name, pairs, description, explicit_commit=True)


def file_upload_descriptor(name: str, pairs: tuple[tuple[str, int], ...],
                           mimetype: str = "") -> FileUploadDescriptor:
    """The descriptor of a plain file upload, committed explicitly."""
    with checked():
        return FileUploadDescriptor(name, pairs, mimetype, explicit_commit=True)
