"""The backend contract: what the Flight service needs from a table store.

The service (tickets, streaming, type mapping, queries, errors, auth) is shared;
a backend only knows where tables live. Two backends implement this contract:
``backends.local`` (the embedded folder store) and ``backends.omero`` (omero-py
against a real OMERO server). Every method runs as ``caller``: a backend must
refuse what that user may not see or change, raising the errors in
``flight_server.errors``.

The public methods (``open_table``, ``create_table``, ``create_file``, ...) are
concrete and make the checks every backend shares, once: names, links (each
spelled as OMERO does), descriptions, table formats, the HDF5 header, string
widths, mimetypes, chunk sizes. Then they call the backend's hook of the same
name with a leading underscore (``_open_table``, ``_create_table``, ...), as
fsspec's ``open`` calls ``_open``: a hook receives only checked arguments and
never repeats these checks.

Row numbers are always the table's own (0-based) row numbers. Arrow schemas
returned here carry the OMERO column type in field metadata
(``flight_protocol.messages.META_COLUMN_TYPE``); build them with
``flight_protocol.columns``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Sequence

import pyarrow as pa

from flight_protocol import columns as cols
from flight_protocol.messages import (
    MAX_NAME_CHARS,
    ProtocolError,
    check_name,
    check_text,
    normalize_links,
)
from flight_server.backends.handles import (
    TABLE_MIMETYPE,
    Caller,
    FileInfo,
    FileWriter,
    OnClose,
    OpenHandles,
    TableHandle,
    TablePage,
    TableRef,
    TableSummary,
    TableWriter,
    UploadResult,
)
from flight_server.backends.paging import MAX_PAGE_SIZE, page_size_of, position_of
from flight_server.backends.parked import ParkedTables
from flight_server.errors import InvalidArgument

__all__ = [
    "TABLE_MIMETYPE", "Backend", "Caller", "FileInfo", "FileWriter", "Links", "OnClose",
    "OpenHandles", "TableHandle", "TablePage", "TableRef", "TableSummary", "TableWriter",
    "UploadResult",
    "check_table_file", "checked_links", "guess_mimetype",
]

#: Checked links: ``(type, id)`` pairs, each type spelled as OMERO does, no repeats.
Links = tuple[tuple[str, int], ...]


def guess_mimetype(name: str) -> str:
    """The mimetype a plain file gets from its name when the uploader gives none."""
    lower = name.lower()
    if lower.endswith(".csv"):
        return "text/csv"
    if lower.endswith(".gz"):
        return "application/gzip"
    return "application/octet-stream"


def checked_links(links: object) -> Links:
    """``links`` as ``(type, id)`` pairs spelled as OMERO does, or ``InvalidArgument``."""
    if not isinstance(links, Iterable):
        raise InvalidArgument(f"links must be a list of (type, id) pairs, not "
                              f"{type(links).__name__}")
    try:
        return normalize_links(links)
    except ProtocolError as exc:
        raise InvalidArgument(str(exc)) from None


def _checked(check: Callable[..., str], *args: object) -> str:
    """A ``flight_protocol.messages`` check, its ``ProtocolError`` as ``InvalidArgument``."""
    try:
        return check(*args)
    except ProtocolError as exc:
        raise InvalidArgument(str(exc)) from None


def check_table_file(ref: TableRef, info: FileInfo) -> None:
    """Refuse to open as a table a file that is not one (a backend's ``_open_table`` calls
    this once it has found the file the caller may read)."""
    if info.mimetype != TABLE_MIMETYPE:
        raise InvalidArgument(
            f"{ref} ({info.name[:100]!r}, {info.mimetype[:100] or 'no mimetype'}) is a plain "
            "file, not an OMERO.table: read it as a file (read_csv / download_csv)")


def _check_ref(ref: TableRef) -> None:
    ids = [i for i in (ref.file_id, ref.annotation_id) if i is not None]
    if len(ids) != 1:
        raise InvalidArgument("name a table or file by exactly one of file_id or "
                              "annotation_id")
    if not isinstance(ids[0], int) or isinstance(ids[0], bool) or ids[0] < 0:
        raise InvalidArgument(f"{ref}: an id is a non-negative integer")


class Backend(abc.ABC):
    """A place tables live. One instance serves many concurrent callers."""

    name: str = "backend"

    #: Table formats ``create_table`` accepts (``UploadDescriptor.format``).
    table_formats: tuple[str, ...] = ("hdf5",)

    # -- reading: checks, then the hooks -----------------------------------------------

    #: Tables opened to plan a read, kept for its ``do_get`` (see :meth:`release_planned`);
    #: None: every read opens its table twice.
    parked: ParkedTables | None = None

    def open_table(self, caller: Caller, ref: TableRef) -> TableHandle:
        """Open an OMERO.tables file the caller may read, or raise not-found/permission
        errors. The handle must be closed (use it in a ``with``)."""
        _check_ref(ref)
        key = self._parking_key(caller)
        if key is not None and self.parked is not None:
            planned = self.parked.take(key, ref)
            if planned is not None:
                return planned  # opened for this read's get_flight_info, moments ago
        return self._open_table(caller, ref)

    def file_info(self, caller: Caller, ref: TableRef) -> FileInfo:
        """Describe any OriginalFile (table or plain file) the caller may read."""
        _check_ref(ref)
        return self._file_info(caller, ref)

    def read_file(self, caller: Caller, ref: TableRef, chunk_size: int) -> Iterator[bytes]:
        """Stream a plain file's bytes in chunks of at most ``chunk_size``."""
        _check_ref(ref)
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
            raise InvalidArgument(f"chunk_size must be a positive integer, got {chunk_size!r}")
        return self._read_file(caller, ref, chunk_size)

    @staticmethod
    def _listing_object(object_type: str | None,
                        object_id: int | None) -> tuple[str | None, int | None]:
        """A listing's object, checked and spelled as OMERO does."""
        if object_type is None:
            if object_id is not None:
                raise InvalidArgument("object_id needs an object_type")
            return None, None
        _checked(check_text, object_type, "object_type", 100)
        kind, checked_id = checked_links(
            [(object_type, 1 if object_id is None else object_id)])[0]
        return kind, None if object_id is None else checked_id

    def list_tables(
        self, caller: Caller, object_type: str | None = None, object_id: int | None = None
    ) -> list[TableSummary]:
        """Tables the caller can see; only those linked to the object (or to any object
        of the type, without ``object_id``) when one is given."""
        kind, oid = self._listing_object(object_type, object_id)
        tables: list[TableSummary] = []
        after = -1
        while True:  # page by page: each page is one bounded query in the backend's store
            page = self._list_tables_page(caller, kind, oid, MAX_PAGE_SIZE, after)
            tables.extend(page.tables)
            if page.next_page_token is None:
                return tables
            after = position_of(page.next_page_token)

    def list_tables_page(
        self, caller: Caller, object_type: str | None = None, object_id: int | None = None,
        page_size: int | None = None, page_token: str | None = None,
    ) -> TablePage:
        """One page of ``list_tables`` after ``page_token`` (see ``backends.paging``): at
        most ``page_size`` tables, and the token of the next page (None on the last)."""
        size, after = page_size_of(page_size), position_of(page_token)
        return self._list_tables_page(caller, *self._listing_object(object_type, object_id),
                                      size, after)

    def release_planned(self, caller: Caller, ref: TableRef, handle: TableHandle) -> None:
        """A read was planned on ``handle`` (``get_flight_info``) and its ``do_get`` comes
        next: a backend with :attr:`parked` keeps it a few seconds for the next
        ``open_table`` of ``ref`` under the caller's :meth:`_parking_key`; else it is closed."""
        key = self._parking_key(caller)
        if key is None or self.parked is None:
            handle.close()
        else:
            self.parked.park(key, ref, handle)

    def _parking_key(self, caller: Caller) -> str | None:
        """Whose parked tables the caller may take: every caller who may read what another
        planned shares its key (a user; a sign-in under OMERO). None: nothing is parked."""
        return None

    # -- writing: checks, then the hooks -----------------------------------------------

    def check_format(self, format: str, schema: pa.Schema | None = None) -> None:
        """Refuse a table format this backend does not store and a stored schema it cannot
        hold: a column without an OMERO column type, an HDF5 header too large."""
        if format not in self.table_formats:
            raise InvalidArgument(
                f"unknown table format {format!r} for this server: it stores tables as "
                f"{' or '.join(self.table_formats)}")
        if schema is None:
            return
        for f in schema:
            try:
                cols.column_type_of(f)
            except (KeyError, cols.UnsupportedColumn):
                raise InvalidArgument(f"column {f.name[:100]!r} carries no OMERO column type: "
                                      "map the schema with flight_protocol.columns") from None
        if format == "hdf5":
            try:
                cols.check_hdf5_header(schema)
            except cols.UnsupportedColumn as exc:
                raise InvalidArgument(f"cannot store this table: {exc}") from None

    def check_upload(self, caller: Caller, links: Sequence[tuple[str, int]],
                     format: str = "hdf5", schema: pa.Schema | None = None) -> Links:
        """Refuse an upload before its data is received: an unknown format, an HDF5 header
        too large, links that are malformed or whose targets the caller may not annotate.
        Returns the checked links. ``create_table`` makes the same checks itself."""
        self.check_format(format, schema)
        checked = checked_links(links)
        self._check_links(caller, checked)
        return checked

    def create_table(
        self,
        caller: Caller,
        name: str,
        schema: pa.Schema,
        links: Sequence[tuple[str, int]],
        description: str = "",
        format: str = "hdf5",
    ) -> TableWriter:
        """Start a new table with the given (already mapped) schema, to be linked on commit.

        Every string column must declare its width. The backend checks that every link
        target exists and that the caller may annotate it before anything is written.
        """
        name = _checked(check_name, name, "the table name")
        description = _checked(check_text, description, "description")
        checked = checked_links(links)
        self.check_format(format, schema)
        for f in schema:
            if cols.column_type_of(f) == cols.STRING and cols.string_size_of(f) is None:
                raise InvalidArgument(f"string column {f.name[:100]!r} has no width")
        return self._create_table(caller, name, schema, checked, description, format)

    def create_file(
        self,
        caller: Caller,
        name: str,
        mimetype: str,
        links: Sequence[tuple[str, int]],
    ) -> FileWriter:
        """Start a new plain OriginalFile (CSV, CSV.gz, ...), to be linked on commit.

        Without a mimetype, one is guessed from the name. A plain file never has the
        ``OMERO.tables`` mimetype: only tables the bridge writes are opened as tables.
        """
        name = _checked(check_name, name, "the file name")
        if "/" in name:
            raise InvalidArgument(f"invalid file name {name[:100]!r}: it contains '/'")
        mimetype = _checked(check_text, mimetype or "", "mimetype", MAX_NAME_CHARS)
        if mimetype.strip().lower() == TABLE_MIMETYPE.lower():
            # A plain upload with that mimetype would be opened as a table (HDF5 the user
            # wrote, issue 10).
            raise InvalidArgument(
                f"a plain file cannot have the mimetype {TABLE_MIMETYPE!r}: only tables the "
                "bridge writes are OMERO.tables (upload a table with upload_table, or give "
                "the file another mimetype, e.g. application/x-hdf5)")
        return self._create_file(caller, name, mimetype or guess_mimetype(name),
                                 checked_links(links))

    # -- OMERO sessions ----------------------------------------------------------------

    def omero_session_key(self, caller: Caller) -> str:
        """The caller's OMERO session key, for calls the bridge makes to OMERO services
        beside OMERO.tables (OMERO Plus registration). Only a backend holding OMERO
        sessions has one."""
        raise InvalidArgument(
            f"this bridge holds no OMERO session for you (its backend, {self.name!r}, is not "
            "OMERO: the embedded store has no OMERO sessions), so it cannot register tables "
            "with OMERO Plus: register from the client with session_key=")

    # -- the hooks a backend implements -------------------------------------------------

    @abc.abstractmethod
    def _open_table(self, caller: Caller, ref: TableRef) -> TableHandle:
        """``open_table`` after the shared checks."""

    @abc.abstractmethod
    def _file_info(self, caller: Caller, ref: TableRef) -> FileInfo:
        """``file_info`` after the shared checks."""

    @abc.abstractmethod
    def _read_file(self, caller: Caller, ref: TableRef, chunk_size: int) -> Iterator[bytes]:
        """``read_file`` after the shared checks."""

    @abc.abstractmethod
    def _list_tables_page(self, caller: Caller, object_type: str | None,
                          object_id: int | None, size: int, after: int) -> TablePage:
        """``list_tables_page`` with checked arguments (an OMERO-spelled object type): at
        most ``size`` tables, in a stable order, after the position ``after`` (-1: from the
        start), and the token naming the last one when more follow."""

    @abc.abstractmethod
    def _create_table(self, caller: Caller, name: str, schema: pa.Schema, links: Links,
                      description: str, format: str) -> TableWriter:
        """``create_table`` with checked arguments: a name, links spelled as OMERO does, a
        format this backend stores, every string column sized. Checks the link targets."""

    @abc.abstractmethod
    def _create_file(self, caller: Caller, name: str, mimetype: str,
                     links: Links) -> FileWriter:
        """``create_file`` with checked arguments (a name without '/', a mimetype that is
        not ``OMERO.tables``, checked links). Checks the link targets."""

    def _check_links(self, caller: Caller,  # noqa: B027 - default: nothing to check early
                     links: Links) -> None:
        """Refuse link targets the caller may not annotate, before an upload's data is
        received (``_create_table`` and ``_create_file`` check them again)."""

    # -- users and sign-ins ------------------------------------------------------------

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

    def token_subject(self, caller: Caller) -> str:
        """What a bearer token names: the user, or one sign-in for backends with
        per-user sessions (OMERO), so a token reaches exactly its own session."""
        return caller.username

    def caller_for_token(self, subject: str) -> Caller:
        """The caller a valid token's subject (:meth:`token_subject`) names."""
        return self.lookup_caller(subject)

    #: A token one replica issued serves every call on the others (False: the sign-in lives
    #: in one process, and other replicas serve only signed table tickets, if any).
    portable_sign_ins: bool = True

    def grant_caller(self, user_id: int, username: str) -> Caller | None:
        """The caller for a valid token whose sign-in this process does not know (another
        replica's): one that may only redeem signed tickets. None: such a token is refused."""
        return None

    def open_for_grant(self, caller: Caller, file_id: int) -> TableHandle:
        """Open the table a verified signed ticket grants to ``caller`` (flight_server/tickets).
        By default the caller's permission is checked again, as for any read."""
        return self.open_table(caller, TableRef(file_id=file_id))

    def logout(self, caller: Caller) -> None:  # noqa: B027 - stateless backends: nothing to end
        """End the caller's sign-in."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release resources held by the backend."""

    def ping(self) -> None:  # noqa: B027 - a backend with nothing to reach is always ready
        """Readiness: return when the backend can serve now, raise when it cannot.

        Runs with no caller and must be quick (the health endpoint's ``/readyz``).
        """
