"""The small types the backend contract and the storage formats share.

Who calls (:class:`Caller`), what a call names (:class:`TableRef`), what the
catalog knows of a file (:class:`FileInfo`, :class:`TableSummary`,
:class:`UploadResult`), and the objects a backend hands out: open tables
(:class:`TableHandle`), tables and files being written (:class:`TableWriter`,
:class:`FileWriter`). The storage formats (``backends.formats``) implement
``TableHandle`` from here; ``backends.base`` builds the contract on top, so the
import graph runs one way: ``base`` -> ``handles`` <- ``formats``.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from flight_server.query import CheckedQuery

#: The OriginalFile mimetype of an OMERO.tables HDF5 file.
TABLE_MIMETYPE = "OMERO.tables"


@dataclass(frozen=True)
class Caller:
    """The authenticated user a call runs as.

    ``session`` is backend-specific: nothing for the embedded store, the
    user's own OMERO session for the OMERO backend.
    """

    user_id: int
    username: str
    group_ids: tuple[int, ...] = ()
    is_admin: bool = False
    session: object | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class TableRef:
    """A table or file named by OriginalFile id or FileAnnotation id (exactly one)."""

    file_id: int | None = None
    annotation_id: int | None = None

    def __str__(self) -> str:
        if self.file_id is not None:
            return f"OriginalFile {self.file_id}"
        return f"FileAnnotation {self.annotation_id}"


@dataclass(frozen=True)
class FileInfo:
    """An OriginalFile as the catalog knows it."""

    file_id: int
    name: str
    mimetype: str
    size: int
    owner_id: int
    group_id: int
    annotation_id: int | None = None
    owner: str = ""  # owner's user name
    group: str = ""  # group name


@dataclass(frozen=True)
class TableSummary:
    """One row of a table listing."""

    file: FileInfo
    links: tuple[tuple[str, int], ...] = ()
    rows: int | None = None


@dataclass(frozen=True)
class TablePage:
    """One page of a table listing; ``next_page_token`` is None on the last page."""

    tables: list[TableSummary]
    next_page_token: str | None = None


@dataclass(frozen=True)
class UploadResult:
    annotation_id: int
    file_id: int
    rows: int


class TableHandle(abc.ABC):
    """An open table. Use as a context manager; ``close`` must always run."""

    info: FileInfo

    @property
    @abc.abstractmethod
    def schema(self) -> pa.Schema:
        """All columns, in table order, with OMERO column metadata."""

    @property
    @abc.abstractmethod
    def num_rows(self) -> int: ...

    @abc.abstractmethod
    def read_range(self, columns: Sequence[str], start: int, stop: int) -> pa.RecordBatch:
        """Rows ``[start, stop)`` of the named columns, as one batch."""

    @abc.abstractmethod
    def read_rows(self, columns: Sequence[str], rows: np.ndarray) -> pa.RecordBatch:
        """The given rows (int64 array, any order, each < num_rows) of the named columns."""

    @abc.abstractmethod
    def where(self, query: CheckedQuery, start: int, stop: int) -> np.ndarray:
        """Row numbers in ``[start, stop)`` where the checked condition holds (int64, sorted)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def will_read(self, columns: Sequence[str], start: int, stop: int) -> None:  # noqa: B027
        """A hint before a stream of ``read_range`` calls over rows ``[start, stop)``: a
        handle that reads ahead stays inside them. Ignored by default."""

    def __enter__(self) -> TableHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WrappedHandle(TableHandle):
    """A handle that reads through another, ``inner``; a subclass adds what goes around the
    reads (:meth:`_using`, called before each) and its own :meth:`close`."""

    def __init__(self, inner: TableHandle, info: FileInfo) -> None:
        self._inner, self.info = inner, info

    def _using(self) -> None:
        """Called before each read."""

    @property
    def schema(self) -> pa.Schema:
        return self._inner.schema

    @property
    def num_rows(self) -> int:
        return self._inner.num_rows

    def read_range(self, columns: Sequence[str], start: int, stop: int) -> pa.RecordBatch:
        self._using()
        return self._inner.read_range(columns, start, stop)

    def read_rows(self, columns: Sequence[str], rows: np.ndarray) -> pa.RecordBatch:
        self._using()
        return self._inner.read_rows(columns, rows)

    def where(self, query: CheckedQuery, start: int, stop: int) -> np.ndarray:
        self._using()
        return self._inner.where(query, start, stop)

    def will_read(self, columns: Sequence[str], start: int, stop: int) -> None:
        self._inner.will_read(columns, start, stop)


#: Called once by a handle when it closes (see :class:`OpenHandles`).
OnClose = Callable[[TableHandle], None]


class OpenHandles:
    """The table handles a backend opened and that have not closed yet.

    A handle is added when it opens and removed by its own ``close`` (it is given
    :meth:`discard` as its ``on_close``), so what is listed here is exactly what is
    still open, whoever holds it: a leaked handle stays listed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[int, TableHandle] = {}

    def add(self, handle: TableHandle) -> TableHandle:
        with self._lock:
            self._open[id(handle)] = handle
        return handle

    def discard(self, handle: TableHandle) -> None:
        with self._lock:
            self._open.pop(id(handle), None)

    def handles(self) -> list[TableHandle]:
        with self._lock:
            return list(self._open.values())


class TableWriter(abc.ABC):
    """A table being created. Nothing is visible to anyone until ``commit``."""

    @abc.abstractmethod
    def append(self, batch: pa.RecordBatch) -> None:
        """Append one batch; its schema is the one the writer was created with."""

    @abc.abstractmethod
    def commit(self) -> UploadResult:
        """Finish the table, create its FileAnnotation and links, make it visible."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Remove everything written so far. Safe to call more than once."""


class FileWriter(abc.ABC):
    """A plain file being stored. Nothing is visible to anyone until ``commit``."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Append bytes to the file."""

    @abc.abstractmethod
    def commit(self) -> FileInfo:
        """Finish the file, create its FileAnnotation and links, make it visible."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Remove everything written so far. Safe to call more than once."""
