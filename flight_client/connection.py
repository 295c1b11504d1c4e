"""The connection to a bridge: its lifetime, and every call a script makes on it.

A :class:`Connection` is unopened until it is used (details resolved by
:mod:`flight_client.details`, asked for by :mod:`flight_client.prompting` when
missing), open after a sign-in, and closed by :meth:`Connection.shutdown`, at
the end of a ``with`` block, when garbage-collected or at interpreter exit.

It does the work: :meth:`~Connection.read` (returning a
:class:`~flight_client.results.ReadResult`), :meth:`~Connection.upload`,
:meth:`~Connection.table_size`, :meth:`~Connection.table_columns`,
:meth:`~Connection.list_tables`, the plain-file calls and registration with
OMERO Plus. The omero2pandas-named module functions (:mod:`flight_client.api`)
open one in a ``with`` block and delegate to it, as httpx's top-level functions
do with a ``Client``.

A bridge that asks no sign-in (started with ``--insecure-no-auth``) is asked
first, without credentials, so nothing is prompted for.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Unpack

import pandas as pd
import pyarrow as pa

from flight_client import errors, files, outputs, prompting, remote, writing
from flight_client import selection as _selection
from flight_client.details import Details, resolve_details
from flight_client.results import ReadResult
from flight_client.selection import Selection
from flight_client.transport import Transport
from flight_protocol.messages import (
    ACTION_HEALTH,
    ACTION_LIST_TABLES,
    ACTION_TABLE_COLUMNS,
    ACTION_TABLE_SIZE,
    ACTION_VERSION,
    ACTION_WHOAMI,
)

LOGGER = logging.getLogger(__name__)

#: Tables per ``list_tables`` request (the server's limit is 5,000).
LIST_PAGE_SIZE = 1_000

KEEP_ALIVE_SECONDS = 60.0
#: Seconds the unauthenticated call that asks whether a bridge wants a sign-in may take.
PROBE_TIMEOUT = 10.0


def _shutdown(transport: Transport | None, stop: threading.Event) -> None:
    stop.set()
    if transport is not None:
        transport.close()


def _keep_alive(transport: Transport, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        try:
            transport.action(ACTION_WHOAMI)
        except errors.OmeroFlightError as exc:
            LOGGER.warning("keep-alive ping failed: %s", exc)


class Connection:
    """A logged-in connection to an omero-flight bridge.

    Use it as ``with connect_to_omero(...) as conn:`` or pass it as
    ``omero_connector=`` to any function. It signs in when first used. It is
    closed by :meth:`shutdown`, at the end of a ``with`` block, when it is
    garbage-collected and at interpreter exit; using it afterwards raises
    :class:`~flight_client.errors.ConnectionClosed`. ``keep_alive`` pings the
    bridge every minute while it is open.
    """

    def __init__(
        self,
        server: str | None = None,
        port: int | str | None = None,
        username: str | None = None,
        password: str | None = None,
        session_key: str | None = None,
        allow_token: bool = True,
        *,
        client: Any = None,
        tls_root_certs: str | bytes | os.PathLike[str] | None = None,
        timeout: float | None = None,
        retries: int = 3,
        keep_alive: bool = True,
    ) -> None:
        if isinstance(client, Connection):
            raise TypeError("client= takes an omero-py client; pass a Connection as "
                            "omero_connector= instead")
        self.details = resolve_details(server, port, username, password, session_key,
                                       allow_token, client, tls_root_certs)
        self.timeout = timeout
        self.retries = retries
        self.keep_alive = keep_alive
        self._transport: Transport | None = None
        self._stop = threading.Event()
        self._closed = False
        self._finalizer: weakref.finalize | None = None

    # -- state ------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def url(self) -> str:
        return self.details.url

    def connect(self, interactive: bool | None = True,
                keep_alive: bool | None = None) -> Connection:
        """Log in (once). ``interactive=None`` prompts only when stdin is a terminal;
        ``keep_alive`` (default: the connection's) pings the bridge every minute."""
        if self._closed:
            raise errors.ConnectionClosed("this connection has been shut down; open a new one")
        if self._transport is not None:
            return self
        keep_alive = self.keep_alive if keep_alive is None else keep_alive
        if interactive is None:
            interactive = sys.stdin is not None and sys.stdin.isatty()
        if self.details.missing() and self.details.host:
            transport = self._open_without_sign_in()
            if transport is not None:  # a bridge that wants no sign-in: nothing to ask
                self._started(transport, keep_alive, "without signing in (the bridge asks none)")
                return self
        if self.details.missing():
            if not interactive:
                raise self.details.missing_error()
            if prompting.in_jupyter():
                prompting.login_form(self.details, self._submit_form(keep_alive))
                return self
            try:
                self.details = prompting.prompt_terminal(self.details)
            except EOFError:  # no one to answer (stdin closed or redirected)
                raise self.details.missing_error() from None
            if self.details.missing():
                raise self.details.missing_error()
        d = self.details
        transport = Transport(d.url, tls_root_certs=d.tls_root_certs, timeout=self.timeout,
                              retries=self.retries)
        try:
            transport.authenticate(d.username or "", d.password or "")
        except BaseException:
            transport.close()
            raise
        self._started(transport, keep_alive, f"as {d.username}")
        return self

    def _started(self, transport: Transport, keep_alive: bool, how: str) -> None:
        self._transport = transport
        self._finalizer = weakref.finalize(self, _shutdown, transport, self._stop)
        if keep_alive:
            threading.Thread(target=_keep_alive, args=(transport, self._stop, KEEP_ALIVE_SECONDS),
                             name="omero-flight-keepalive", daemon=True).start()
        LOGGER.info("connected to %s %s", self.details.url, how)

    def _open_without_sign_in(self) -> Transport | None:
        """A transport to a bridge that serves calls without a sign-in (one started with
        ``--insecure-no-auth``), or None when it wants one or cannot be reached now."""
        d = self.details
        probe_timeout = min(self.timeout or PROBE_TIMEOUT, PROBE_TIMEOUT)
        transport = Transport(d.url, tls_root_certs=d.tls_root_certs, timeout=probe_timeout,
                              retries=0)
        try:
            transport.action(ACTION_WHOAMI)
        except errors.OmeroFlightError:
            transport.close()
            return None
        except BaseException:
            transport.close()
            raise
        transport.retries, transport.timeout = self.retries, self.timeout
        return transport

    def _submit_form(self, keep_alive: bool) -> Callable[[Details], str]:
        """What the login form calls with the details it was given: connect, return the URL."""

        def submit(details: Details) -> str:
            self.details = details
            self.connect(interactive=False, keep_alive=keep_alive)
            return self.url

        return submit

    @property
    def transport(self) -> Transport:
        """The Flight transport; connects on first use (prompting only on a terminal)."""
        if self._closed:
            raise errors.ConnectionClosed("this connection has been shut down; open a new one")
        if self._transport is None:
            self.connect(interactive=None)
        if self._transport is None:
            raise errors.MissingConnectionDetails("fill in the login form first")
        return self._transport

    def shutdown(self) -> None:
        """Close the connection; safe to call more than once."""
        self._closed = True
        if self._finalizer is not None:
            self._finalizer()
        else:
            self._stop.set()

    close = shutdown

    def __enter__(self) -> Connection:
        self.connect(interactive=None)
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._transport else "unopened"
        return f"<Connection {self.url} user={self.details.username!r} {state}>"

    def get_gateway(self) -> Any:
        """omero2pandas returns a BlitzGateway here; a bridge does not expose the OMERO API."""
        raise errors.NotSupported(
            "an omero-flight connection has no BlitzGateway: the bridge serves tables only; "
            "use omero-py directly for the rest of the OMERO API"
        )

    get_client = get_gateway

    # -- small server calls -----------------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        """Who the bridge thinks we are: user name, groups, ..."""
        return self.transport.action(ACTION_WHOAMI)

    def server_version(self) -> dict[str, Any]:
        return self.transport.action(ACTION_VERSION)

    def health(self) -> dict[str, Any]:
        return self.transport.action(ACTION_HEALTH)

    def keep_sign_in(self) -> None:
        """Leave this sign-in open at shutdown until its token expires (the bridge's
        ``token_lifetime``): a lazy Dask or Ray read's workers use the token later."""
        self.transport.keep_sign_in()

    # -- tables -----------------------------------------------------------------------------
    def read(self, *, row_numbers: bool = True, progress: bool | None = None,
             **selection: Unpack[Selection]) -> ReadResult:
        """A read of one table, checked now and sent when an output is asked for.

        ``selection`` is described by :class:`~flight_client.selection.Selection`
        (``file_id`` or ``annotation_id``, ``column_names``, ``rows``, ``query``,
        ``variables``, ``chunk_size``). ``row_numbers`` sends the table's row
        numbers (the DataFrame's index; a ``__row__`` column in other outputs).
        ``conn.read(file_id=1).to_pandas()``; see :class:`~flight_client.results.ReadResult`.
        """
        ticket = _selection.selection_ticket(selection, row_numbers=row_numbers)
        return ReadResult(lambda: self.transport, ticket, progress=progress,
                          tls_root_certs=self.details.tls_root_certs)

    def column_details(self, file_id: Any = None,
                       annotation_id: Any = None) -> list[dict[str, Any]]:
        """``[{"name", "type", "description"}, ...]`` for each column of a table."""
        ticket = _selection.table_ticket(file_id, annotation_id)
        result = self.transport.action(ACTION_TABLE_COLUMNS, **ticket.to_json())
        return list(result.get("columns", []))

    def table_columns(self, file_id: Any = None, annotation_id: Any = None) -> list[str]:
        """The table's column names, in order."""
        return [c["name"] for c in self.column_details(file_id, annotation_id)]

    def table_size(self, file_id: Any = None, annotation_id: Any = None) -> tuple[int, int]:
        """``(rows, columns)`` of a table."""
        ticket = _selection.table_ticket(file_id, annotation_id)
        result = self.transport.action(ACTION_TABLE_SIZE, **ticket.to_json())
        return int(result["rows"]), int(result["columns"])

    def list_tables(self, object_type: str | None = None,
                    object_id: int | None = None) -> list[dict[str, Any]]:
        """Tables linked to an object (e.g. ``"Image", 1``), or with no object all you can read.

        Each entry has ``file_id``, ``annotation_id``, ``name``, ``owner``,
        ``group``, ``links`` and ``rows``.
        """
        if (object_type is None) != (object_id is None):
            raise errors.InvalidRequest("give both object_type and object_id, or neither")
        body: dict[str, Any] = {}
        if object_type is not None:
            body = {"object_type": object_type,
                    "object_id": _selection.object_id(object_id, "object_id")}
        tables: list[dict[str, Any]] = []
        token = None
        seen: set[str] = set()
        while True:  # page by page: the server queries OMERO one bounded page at a time
            page: dict[str, Any] = {"page_size": LIST_PAGE_SIZE}
            if token is not None:
                page["page_token"] = token
            result = self.transport.action(ACTION_LIST_TABLES, **body, **page)
            listed = result.get("tables", [])
            tables.extend(listed)
            token = result.get("next_page_token")
            if not token:
                return tables
            if not isinstance(token, str) or token in seen or not listed:
                # A bridge that hands back a token it gave before, or empty pages, would
                # page for ever (a page with a next one is full).
                raise errors.ServerError(f"the bridge's listing gave the page token "
                                         f"{str(token)[:40]!r} twice, not as a string, or "
                                         "with an empty page")
            seen.add(token)

    def upload(
        self,
        source: pd.DataFrame | str | os.PathLike[str] | pa.Table | pa.RecordBatchReader,
        table_name: str,
        parent_id: int | None = None,
        parent_type: str = "Image",
        links: Iterable[tuple[str, int]] | None = None,
        chunk_size: int | None = None,
        *,
        description: str = "",
        local_path: str | os.PathLike[str] | None = None,
        remote_path: str | os.PathLike[str] | None = None,
        prefix: str = "",
        progress: bool | None = None,
    ) -> int:
        """Upload a table; its new FileAnnotation id. See :func:`flight_client.upload_table`."""
        _selection.table_name(table_name)
        normalized = _selection.upload_links(links, parent_id, parent_type)
        if local_path is not None or remote_path is not None:
            if local_path is None:
                raise errors.InvalidRequest(
                    "remote_path needs local_path: where this machine writes the TileDB array")
            if description:
                LOGGER.warning("OMERO Plus registration takes no description; it is not stored")
            return remote.create_remote_table(source, table_name, local_path, remote_path,
                                              normalized, chunk_size, self, prefix,
                                              progress=progress)
        if all(kind == "Roi" for kind, _ in normalized):
            LOGGER.warning("the table is only linked to ROIs; OMERO.web may not show it")
        descriptor = _selection.upload_descriptor(table_name, normalized, description)
        data = writing.upload_source(source, chunk_size)
        result = writing.send_table(self.transport, descriptor, data, progress)
        return int(result["annotation_id"])

    def register_table(
        self,
        remote_path: str | os.PathLike[str],
        table_name: str,
        links: Iterable[tuple[str, int]],
        token: str | None,
        prefix: str = "",
        **options: Any,
    ) -> int:
        """Register a TileDB array with OMERO Plus in place; see
        :func:`flight_client.remote.register_table` (``options``: ``web_url``,
        ``session_key``, ``ca_file``, ``timeout``)."""
        return remote.register_table(self, remote_path, table_name, links, token, prefix,
                                     **options)

    # -- plain files ------------------------------------------------------------------------
    def read_csv(self, file_id: Any = None, annotation_id: Any = None,
                 column_names: Iterable[str] | None = None,
                 chunk_size: int = files.DEFAULT_CHUNK_BYTES, *, check_type: bool = True,
                 progress: bool | None = None, **kwargs: Any) -> pd.DataFrame:
        """A CSV/CSV.gz file attached to OMERO as a DataFrame; see
        :func:`flight_client.read_csv`."""
        ticket = _selection.file_ticket(file_id, annotation_id, chunk_size, check_type)
        return files.read_csv(self.transport, ticket, column_names, check_type, progress, kwargs)

    def download_csv(self, target_path: str | os.PathLike[str], file_id: Any = None,
                     annotation_id: Any = None, chunk_size: int = files.DEFAULT_CHUNK_BYTES,
                     check_type: bool = True, *, progress: bool | None = None) -> int:
        """Download a CSV/CSV.gz file as it is; the bytes written. See
        :func:`flight_client.download_csv`."""
        ticket = _selection.file_ticket(file_id, annotation_id, chunk_size, check_type)
        path = outputs.check_target(target_path)
        return files.download(self.transport, ticket, path, progress)

    def upload_file(self, source: str | os.PathLike[str], parent_id: int | None = None,
                    parent_type: str = "Image", links: Iterable[tuple[str, int]] | None = None,
                    file_name: str | None = None, mimetype: str | None = None,
                    chunk_size: int = files.DEFAULT_CHUNK_BYTES, *,
                    progress: bool | None = None) -> int:
        """Attach a plain file to OMERO objects; its FileAnnotation id. See
        :func:`flight_client.upload_file`."""
        path = files.local_file(source)
        _selection.check_chunk_size(chunk_size, "bytes", optional=False)
        descriptor = _selection.file_upload_descriptor(
            file_name or path.name, _selection.upload_links(links, parent_id, parent_type),
            mimetype or "")
        return files.upload(self.transport, path, descriptor, chunk_size, progress)


#: omero2pandas' name for the connection class.
OMEROConnection = Connection


def connect_to_omero(
    client: Any = None,
    server: str | None = None,
    port: int | str | None = None,
    username: str | None = None,
    password: str | None = None,
    session_key: str | None = None,
    allow_token: bool = True,
    interactive: bool = True,
    keep_alive: bool = True,
) -> Connection:
    """Connect to a bridge and return the :class:`Connection` (omero2pandas' signature).

    ``server`` takes a host or a URL; ``port`` defaults to 8815 (the bridge's,
    not OMERO's 4064). Missing details are prompted for unless ``interactive``
    is False. ``keep_alive`` pings the bridge every minute so sessions stay open.
    """
    conn = Connection(server, port, username, password, session_key, allow_token, client=client)
    return conn.connect(interactive=interactive, keep_alive=keep_alive)


@contextmanager
def use_connection(
    omero_connector: Any = None,
    server: str | None = None,
    port: int | str | None = None,
    username: str | None = None,
    password: str | None = None,
) -> Iterator[Connection]:
    """The connection a function call runs on: the caller's, or one for this call only.

    One made here signs in when first used, and is shut down at the end of the
    block. Either way arguments are checked before any network call: a closed
    connection raises ConnectionClosed at its first use.
    """
    if isinstance(omero_connector, Connection):
        yield omero_connector
        return
    conn = Connection(server, port, username, password, client=omero_connector,
                      keep_alive=False)
    try:
        yield conn
    finally:
        conn.shutdown()
