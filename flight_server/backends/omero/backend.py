"""``OmeroBackend``: the backend contract over an OMERO server, every call as the caller.

The bridge holds no OMERO account of its own. Each sign-in creates (or joins)
that user's OMERO session (``sessions``); every later call runs in it, so
OMERO's permissions decide what each user reads and writes. All OMERO calls
pass one gate that bounds their concurrency and translates OMERO's errors
(``calls``, ``errors``).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

import omero.model
import pyarrow as pa

from flight_client.protocol import normalize_links
from flight_server import columns as cols
from flight_server.backends.base import (
    TABLE_MIMETYPE,
    Backend,
    Caller,
    FileInfo,
    FileWriter,
    TableHandle,
    TablePage,
    TableRef,
    TableSummary,
    TableWriter,
)
from flight_server.backends.omero.calls import ALL_GROUPS, DEFAULT_MAX_CALLS, CallGate
from flight_server.backends.omero.direct import DirectReads
from flight_server.backends.omero.files import OmeroFileWriter, file_chunks
from flight_server.backends.omero.listing import table_page
from flight_server.backends.omero.lookup import Lookup
from flight_server.backends.omero.parked import DEFAULT_LIFETIME, ParkedTables
from flight_server.backends.omero.ping import RouterPing
from flight_server.backends.omero.sessions import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    ClientFactory,
    OmeroSession,
    SessionManager,
    _client,
    with_call_timeout,
)
from flight_server.backends.omero.tables import OmeroTable
from flight_server.backends.omero.writer import OmeroTableWriter
from flight_server.backends.paging import MAX_PAGE_SIZE
from flight_server.errors import InvalidArgument, Unauthenticated
from flight_server.streaming import guess_mimetype

log = logging.getLogger(__name__)


class OmeroBackend(Backend):
    """OMERO.tables on ``host:port`` (the SSL port omero-py uses, 4064 by default).

    With ``data_dir`` (OMERO's data directory, readable here) tables are read
    directly from their HDF5 files once the caller's session has found them.
    ``call_timeout`` bounds every single OMERO call (seconds, Ice invocation timeout).
    ``planned_lifetime``: seconds a table opened to plan a read stays open for that
    read's ``do_get`` (``parked``; 0 opens it again).
    """

    name = "omero"

    def __init__(self, host: str, port: int = 4064, *,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                 max_calls: int = DEFAULT_MAX_CALLS,
                 client_factory: ClientFactory = _client,
                 data_dir: str | Path | None = None,
                 call_timeout: float = DEFAULT_CALL_TIMEOUT,
                 planned_lifetime: float = DEFAULT_LIFETIME) -> None:
        self.host, self.port = host, int(port)
        self.direct = DirectReads(data_dir) if data_dir is not None else None
        self.sessions = SessionManager(host, self.port, idle_timeout,
                                       with_call_timeout(client_factory, call_timeout))
        self.gate = CallGate(self.sessions, max_calls)
        self.parked = ParkedTables(planned_lifetime)
        self.sessions.on_close.append(self.parked.drop)
        self._secret = secrets.token_bytes(32)
        self.pinger = RouterPing(host, self.port, client_factory)

    def __repr__(self) -> str:
        return f"OmeroBackend({self.host!r}, {self.port})"

    # -- sessions --------------------------------------------------------------------

    def authenticate(self, username: str, password: str) -> Caller:
        return self.sessions.login(username, password).caller()

    def token_subject(self, caller: Caller) -> str:
        """What a bearer token names: the caller's bridge session, never just a user."""
        return self._session(caller).handle

    def lookup_caller(self, username: str) -> Caller:
        return self.sessions.get(username).caller()

    def logout(self, caller: Caller) -> None:
        """End the caller's sign-in: close (or, if joined by key, detach) its OMERO session."""
        self.sessions.logout(self._session(caller).handle)

    def token_secret(self) -> bytes:
        """Tokens name in-memory sessions, so a fresh key per process is right."""
        return self._secret

    def close(self) -> None:
        self.parked.close()
        self.sessions.close()
        self.pinger.close()

    def ping(self) -> None:
        """Readiness: OMERO's router answers, with no user session (``ping``)."""
        self.pinger.ping()

    @staticmethod
    def _session(caller: Caller) -> OmeroSession:
        if not isinstance(caller.session, OmeroSession):
            raise Unauthenticated("no OMERO session for this call: sign in again")
        return caller.session

    def _lookup(self, caller: Caller) -> Lookup:
        return Lookup(self.gate, self._session(caller))

    # -- reading ---------------------------------------------------------------------

    def file_info(self, caller: Caller, ref: TableRef) -> FileInfo:
        return self._lookup(caller).original_file(ref)[1]

    def open_table(self, caller: Caller, ref: TableRef) -> TableHandle:
        session = self._session(caller)
        planned = self.parked.take(session, ref)
        if planned is not None:
            return planned  # opened for this read's get_flight_info, moments ago
        ofile, info = self._lookup(caller).original_file(ref)
        if info.mimetype != TABLE_MIMETYPE:
            raise InvalidArgument(
                f"{ref} ({info.name!r}, {info.mimetype or 'no mimetype'}) is not an "
                "OMERO.table: read it as a file with read_csv or download_csv")
        if self.direct is not None:
            return self.direct.open(info, session)
        with self.gate.call(session, f"opening {ref} ({info.name!r})") as sf:
            table = sf.sharedResources().openTable(
                omero.model.OriginalFileI(info.file_id, False), ALL_GROUPS)
        if table is None:
            raise InvalidArgument(f"OMERO could not open {ref} as a table")
        return OmeroTable(self.gate, session, info, table)

    def read_file(self, caller: Caller, ref: TableRef, chunk_size: int) -> Iterator[bytes]:
        info = self.file_info(caller, ref)
        return file_chunks(self.gate, self._session(caller), info, chunk_size)

    def release_planned(self, caller: Caller, ref: TableRef, handle: TableHandle) -> None:
        self.parked.park(self._session(caller), ref, handle)

    def list_tables(self, caller: Caller, object_type: str | None = None,
                    object_id: int | None = None) -> list[TableSummary]:
        """Every page of the listing, each one bounded query (``listing``)."""
        tables: list[TableSummary] = []
        token = None
        while True:
            page = self.list_tables_page(caller, object_type, object_id, MAX_PAGE_SIZE, token)
            tables.extend(page.tables)
            if page.next_page_token is None:
                return tables
            token = page.next_page_token

    def list_tables_page(self, caller: Caller, object_type: str | None = None,
                         object_id: int | None = None, page_size: int | None = None,
                         page_token: str | None = None) -> TablePage:
        with self.gate.call(self._session(caller), "listing tables") as sf:
            return table_page(sf.getQueryService(), object_type, object_id, page_size,
                              page_token)

    # -- writing ---------------------------------------------------------------------

    def check_upload(self, caller: Caller, links: Sequence[tuple[str, int]]) -> None:
        self._lookup(caller).link_group(normalize_links(links))

    def create_table(self, caller: Caller, name: str, schema: pa.Schema,
                     links: Sequence[tuple[str, int]], description: str = "") -> TableWriter:
        links = normalize_links(links)
        if not name or not name.strip():
            raise InvalidArgument("a table needs a name")
        for f in schema:
            if cols.column_type_of(f) == cols.STRING and cols.string_size_of(f) is None:
                raise InvalidArgument(f"string column {f.name!r} has no width")
        group = self._lookup(caller).link_group(links)
        return OmeroTableWriter(self.gate, self._session(caller), name, schema, links,
                                description, group)

    def create_file(self, caller: Caller, name: str, mimetype: str,
                    links: Sequence[tuple[str, int]]) -> FileWriter:
        links = normalize_links(links)
        if mimetype.strip().lower() == TABLE_MIMETYPE.lower():
            # Only the bridge's own table writer makes OMERO.tables files: a plain upload
            # with that mimetype would be opened as a table (HDF5 the user wrote, issue 10).
            raise InvalidArgument(f"a plain file cannot have the mimetype {TABLE_MIMETYPE!r}: "
                                  "upload tables with upload_table")
        lookup = self._lookup(caller)
        group = lookup.link_group(links)
        return OmeroFileWriter(self.gate, self._session(caller), name,
                               mimetype or guess_mimetype(name), links, group,
                               lambda file_id: lookup.original_file(TableRef(file_id=file_id))[1])
