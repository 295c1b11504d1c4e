"""The backend contract: what the Flight service needs from a table store.

The service (tickets, streaming, type mapping, queries, errors, auth) is shared;
a backend only knows where tables live. Two backends implement this contract:
``backends.local`` (the embedded folder store) and ``backends.omero`` (omero-py
against a real OMERO server). Every method runs as ``caller``: a backend must
refuse what that user may not see or change, raising the errors in
``flight_server.errors``.

Row numbers are always the table's own (0-based) row numbers. Arrow schemas
returned here carry the OMERO column type in field metadata
(``flight_client.protocol.META_COLUMN_TYPE``); build them with
``flight_server.columns``.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
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

    def __enter__(self) -> TableHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


class Backend(abc.ABC):
    """A place tables live. One instance serves many concurrent callers."""

    name: str = "backend"

    @abc.abstractmethod
    def open_table(self, caller: Caller, ref: TableRef) -> TableHandle:
        """Open an OMERO.tables file the caller may read, or raise not-found/permission errors."""

    @abc.abstractmethod
    def file_info(self, caller: Caller, ref: TableRef) -> FileInfo:
        """Describe any OriginalFile (table or plain file) the caller may read."""

    @abc.abstractmethod
    def read_file(self, caller: Caller, ref: TableRef, chunk_size: int) -> Iterator[bytes]:
        """Stream a plain file's bytes in chunks of at most ``chunk_size``."""

    @abc.abstractmethod
    def create_table(
        self,
        caller: Caller,
        name: str,
        schema: pa.Schema,
        links: Sequence[tuple[str, int]],
        description: str = "",
    ) -> TableWriter:
        """Start a new table with the given (already mapped) schema, to be linked on commit.

        Checks that every link target exists and that the caller may annotate it
        before anything is written.
        """

    def check_upload(self, caller: Caller,  # noqa: B027 - default: nothing to check early
                     links: Sequence[tuple[str, int]]) -> None:
        """Refuse an upload before its data is received (link targets the caller may not
        annotate, ...); ``create_table`` and ``create_file`` check the same again."""

    @abc.abstractmethod
    def list_tables(
        self, caller: Caller, object_type: str | None = None, object_id: int | None = None
    ) -> list[TableSummary]:
        """Tables the caller can see; only those linked to the object when one is given."""

    def list_tables_page(
        self, caller: Caller, object_type: str | None = None, object_id: int | None = None,
        page_size: int | None = None, page_token: str | None = None,
    ) -> TablePage:
        """One page of ``list_tables`` (see ``backends.paging``), after ``page_token``.

        Backends that can page in their own store override this; this default pages
        the whole listing by position.
        """
        from flight_server.backends.paging import page_size_of, position_of, token_after

        size, after = page_size_of(page_size), position_of(page_token)
        tables = self.list_tables(caller, object_type, object_id)
        page = tables[after + 1:after + 1 + size]
        more = after + 1 + size < len(tables)
        return TablePage(page, token_after(after + size) if more else None)

    def release_planned(self, caller: Caller, ref: TableRef, handle: TableHandle) -> None:
        """A read was planned on ``handle`` (``get_flight_info``) and its ``do_get`` comes
        next. Backends where opening a table is costly may keep it briefly for that read
        (the next ``open_table`` of ``ref`` by the same sign-in); by default it is closed."""
        handle.close()

    @abc.abstractmethod
    def create_file(
        self,
        caller: Caller,
        name: str,
        mimetype: str,
        links: Sequence[tuple[str, int]],
    ) -> FileWriter:
        """Start a new plain OriginalFile (CSV, CSV.gz, ...), to be linked on commit."""

    @abc.abstractmethod
    def authenticate(self, username: str, password: str) -> Caller:
        """Check a user name and password; raise ``errors.Unauthenticated`` when wrong.

        The user name ``__session__`` is reserved: its password is an OMERO
        session key, which only the OMERO backend accepts.
        """

    @abc.abstractmethod
    def lookup_caller(self, username: str) -> Caller:
        """The caller for a user a valid token names; ``errors.Unauthenticated`` if gone."""

    @abc.abstractmethod
    def token_secret(self) -> bytes:
        """The key that signs this server's bearer tokens (kept by the backend)."""

    #: Table formats ``create_table`` accepts (``UploadDescriptor.format``).
    table_formats: tuple[str, ...] = ("hdf5",)

    def token_subject(self, caller: Caller) -> str:
        """What a bearer token names: the user, or one sign-in for backends with
        per-user sessions (OMERO), so a token reaches exactly its own session."""
        return caller.username

    def caller_for_token(self, subject: str) -> Caller:
        """The caller a valid token's subject (:meth:`token_subject`) names."""
        return self.lookup_caller(subject)

    def logout(self, caller: Caller) -> None:  # noqa: B027 - stateless backends: nothing to end
        """End the caller's sign-in."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release resources held by the backend."""

    def ping(self) -> None:  # noqa: B027 - a backend with nothing to reach is always ready
        """Readiness: return when the backend can serve now, raise when it cannot.

        Runs with no caller and must be quick (the health endpoint's ``/readyz``).
        """
