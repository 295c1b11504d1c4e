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
from collections.abc import Iterator
from pathlib import Path

import omero.model
import pyarrow as pa

from flight_server.backends.base import (
    Backend,
    Caller,
    FileInfo,
    FileWriter,
    Links,
    TableHandle,
    TablePage,
    TableRef,
    TableWriter,
    check_table_file,
)
from flight_server.backends.omero.calls import ALL_GROUPS, DEFAULT_MAX_CALLS, CallGate
from flight_server.backends.omero.direct import DirectReads
from flight_server.backends.omero.files import OmeroFileWriter, file_chunks
from flight_server.backends.omero.listing import table_page
from flight_server.backends.omero.lookup import Lookup
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
from flight_server.backends.parked import DEFAULT_LIFETIME, ParkedTables
from flight_server.errors import InvalidArgument, Unauthenticated

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
    #: OMERO.tables stores HDF5 only (``Backend.check_format`` refuses the rest, by name).
    table_formats = ("hdf5",)

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
        self.parked: ParkedTables = ParkedTables(planned_lifetime)
        self.sessions.on_close.append(lambda session: self.parked.drop(session.handle))
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
        if self.direct is not None:
            self.direct.close()
        self.sessions.close()
        self.pinger.close()

    def ping(self) -> None:
        """Readiness: OMERO's router answers, with no user session (``ping``)."""
        self.pinger.ping()

    def omero_session_key(self, caller: Caller) -> str:
        """The key of the caller's own OMERO session (OMERO Plus registration uses it)."""
        return str(self._session(caller).client.getSessionId())

    @staticmethod
    def _session(caller: Caller) -> OmeroSession:
        if not isinstance(caller.session, OmeroSession):
            raise Unauthenticated("no OMERO session for this call: sign in again")
        return caller.session

    def _lookup(self, caller: Caller) -> Lookup:
        return Lookup(self.gate, self._session(caller))

    # -- reading ---------------------------------------------------------------------

    def _file_info(self, caller: Caller, ref: TableRef) -> FileInfo:
        return self._lookup(caller).original_file(ref)[1]

    def _open_table(self, caller: Caller, ref: TableRef) -> TableHandle:
        session = self._session(caller)
        _, info = self._lookup(caller).original_file(ref, with_annotation=False)
        check_table_file(ref, info)
        if self.direct is not None:
            return self.direct.open(info, session)
        with self.gate.call(session, f"opening {ref} ({info.name!r})"):
            table = session.shared_resources().openTable(
                omero.model.OriginalFileI(info.file_id, False), ALL_GROUPS)
        if table is None:
            raise InvalidArgument(f"OMERO could not open {ref} as a table")
        return OmeroTable(self.gate, session, info, table)

    # Scale-out: sessions live in one replica; one with the data directory serves the
    # signed range tickets another replica planned through the caller's session.
    portable_sign_ins = False

    def grant_caller(self, user_id: int, username: str) -> Caller | None:
        return Caller(user_id, username) if self.direct is not None else None

    def open_for_grant(self, caller: Caller, file_id: int) -> TableHandle:
        if isinstance(caller.session, OmeroSession) or self.direct is None:
            return self.open_table(caller, TableRef(file_id=file_id))
        return self.direct.open_granted(file_id)

    def _read_file(self, caller: Caller, ref: TableRef, chunk_size: int) -> Iterator[bytes]:
        info = self._file_info(caller, ref)
        return file_chunks(self.gate, self._session(caller), info, chunk_size)

    def _parking_key(self, caller: Caller) -> str | None:
        """A sign-in's own: two sign-ins of one user share no parked table."""
        session = self._session(caller)
        return None if session.closed else session.handle

    def _list_tables_page(self, caller: Caller, object_type: str | None,
                          object_id: int | None, size: int, after: int) -> TablePage:
        session = self._session(caller)
        with self.gate.call(session, "listing tables"):
            return table_page(session.query_service(), object_type, object_id, size, after)

    # -- writing ---------------------------------------------------------------------

    def _check_links(self, caller: Caller, links: Links) -> None:
        self._lookup(caller).link_group(links)

    def _create_table(self, caller: Caller, name: str, schema: pa.Schema, links: Links,
                      description: str, format: str) -> TableWriter:
        group = self._lookup(caller).link_group(links)
        return OmeroTableWriter(self.gate, self._session(caller), name, schema, links,
                                description, group)

    def _create_file(self, caller: Caller, name: str, mimetype: str,
                     links: Links) -> FileWriter:
        lookup = self._lookup(caller)
        group = lookup.link_group(links)
        return OmeroFileWriter(self.gate, self._session(caller), name, mimetype, links, group,
                               lambda file_id: lookup.original_file(TableRef(file_id=file_id))[1])
