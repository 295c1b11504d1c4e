"""TileDB tables and their in-place registration with OMERO Plus (the ``tiledb`` extra).

Two steps, as in omero2pandas:

1. :func:`create_tiledb` writes a table (DataFrame, CSV path read in chunks,
   Arrow table, or a stream of record batches) to a new TileDB array in the
   layout OMERO Plus reads, with a random ``SecretToken`` in its metadata.
2. :func:`register_table` asks OMERO Plus (its OMERO.web, over HTTPS) to
   register the array where the server sees it: it fetches a CSRF token and
   cookie from ``<web>/<prefix>/api/v0/token``, then POSTs the path, name and
   link targets as JSON to ``<web>/<prefix>/omero_plus/api/v0/table?bsession=<key>``
   with the ``X-CSRFToken``, ``X-SecretToken`` and ``Referer`` headers. The
   server opens the array, checks the token and answers with the new
   FileAnnotation id.

Without a session key, a bridge connection asks the bridge to register with
the caller's OMERO session (the ``register_table`` action).

:func:`create_remote_table` does both and maps the local path to the
server's view (:func:`remote_location`). omero2pandas takes the web address
and session from its OMERO connection; this client talks to a bridge instead,
so the OMERO.web address is ``web_url=`` or ``OMERO_FLIGHT_WEB_URL`` and the
session key is ``session_key=`` or the key of a connection logged in as
``__session__`` (or an omero-py client's session).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import pyarrow as pa

from flight_client import errors, selection
from flight_client.details import SESSION_USER, Details, omero_session
from flight_client.outputs import check_target
from flight_client.progress import bar
from flight_client.writing import rechunk, upload_source
from flight_protocol import columns as cols
from flight_protocol import omero_plus
from flight_protocol.messages import ACTION_REGISTER_TABLE, ROW_NUMBER_COLUMN

LOGGER = logging.getLogger(__name__)

ENV_WEB_URL = omero_plus.ENV_WEB_URL
DEFAULT_CHUNK_SIZE = 1000
SUFFIX = ".tiledb"
_WINDOWS_PATH = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")


def _layout() -> Any:
    """:mod:`flight_protocol.tiledb`, or MissingDependency naming the extra."""
    try:
        import tiledb  # noqa: F401
    except ImportError:
        raise errors.MissingDependency(
            "TileDB tables need tiledb: pip install 'omero-flight[tiledb]'") from None
    from flight_protocol import tiledb as layout

    return layout


# -- writing an array ----------------------------------------------------------------------------
def _reader_batches(reader: Any, chunk_size: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Schema and batches (at most ``chunk_size`` rows) of a RecordBatchReader or Flight stream."""
    if hasattr(reader, "to_reader"):  # a Flight stream reader
        reader = reader.to_reader()
    return reader.schema, rechunk(reader, chunk_size)


def _source_batches(source: Any, chunk_size: int
                    ) -> tuple[pa.Schema, int | None, Iterator[pa.RecordBatch]]:
    if isinstance(source, pa.RecordBatchReader) or hasattr(source, "to_reader"):
        schema, batches = _reader_batches(source, chunk_size)
        return schema, None, batches
    data = upload_source(source, chunk_size)
    return data.schema, data.total_rows, data.batches


def write_tiledb(path: str | os.PathLike[str], schema: pa.Schema,
                 batches: Iterable[pa.RecordBatch], total_rows: int | None = None,
                 progress: bool | None = None) -> tuple[str, int]:
    """Write batches to a new TileDB table array, one TileDB write each; (SecretToken, rows).

    Types follow OMERO.tables (:mod:`flight_protocol.columns`); a ``__row__``
    column (row numbers sent by the bridge) is dropped, and rows are numbered
    0, 1, ... in the array. A partial array is removed on failure.
    """
    layout = _layout()

    target = check_target(path)
    keep = [n for n in schema.names if n != ROW_NUMBER_COLUMN]
    try:
        stored = cols.omero_schema(pa.schema([schema.field(n) for n in keep]))
    except cols.UnsupportedColumn as exc:
        raise errors.InvalidRequest(str(exc)) from None
    token = secrets.token_urlsafe()
    try:
        writer = layout.TileDBWriter(target, stored, token=token)
    except cols.UnsupportedColumn as exc:
        raise errors.InvalidRequest(str(exc)) from None
    progress_bar = bar("Writing TileDB table", total_rows, "rows", progress)
    try:
        for batch in batches:
            if batch.schema.names != keep:
                batch = batch.select(keep)
            try:
                writer.append(cols.conform_batch(batch, stored))
            except cols.UnsupportedColumn as exc:
                raise errors.InvalidRequest(str(exc)) from None
            progress_bar.update(batch.num_rows)
        writer.close()
    except BaseException:
        writer.close()
        shutil.rmtree(target, ignore_errors=True)
        raise
    finally:
        progress_bar.close()
    LOGGER.info("wrote %d rows in %d writes to TileDB array %s", writer.rows, writer.writes,
                target)
    return token, writer.rows


def create_tiledb(
    source: Any,
    path: str | os.PathLike[str],
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
    *,
    progress: bool | None = None,
) -> str:
    """Write ``source`` to a new TileDB array at ``path``; returns its ``SecretToken``.

    ``source``: a pandas DataFrame, a CSV (or Parquet) path read ``chunk_size``
    rows at a time, a pyarrow Table, or a ``RecordBatchReader`` / Flight
    stream reader. Each chunk is one TileDB write. The array is laid out as
    OMERO Plus expects (sparse, row dimension ``__tiledb_rows``, metadata
    ``__version = '3'``, ``__initialized`` and the random ``SecretToken``
    returned here, which :func:`register_table` needs). An existing ``path``
    raises ``FileExistsError``; MaskColumns are refused.
    """
    size = chunk_size or DEFAULT_CHUNK_SIZE
    selection.check_chunk_size(size)
    check_target(path)
    schema, total, batches = _source_batches(source, size)
    token, _ = write_tiledb(path, schema, batches, total, progress)
    return token


# -- where the server sees the array -------------------------------------------------------------
def _pure_local(path: str | os.PathLike[str]) -> Path | PureWindowsPath:
    text = os.fspath(path)
    if os.name != "nt" and _WINDOWS_PATH.match(text):
        return PureWindowsPath(text)  # a drive or UNC path, given on another system
    return Path(text)


def remote_location(
    local_path: str | os.PathLike[str],
    remote_path: str | os.PathLike[str] | None,
    table_name: str,
) -> tuple[Path | PureWindowsPath, PurePosixPath]:
    """(where this machine writes the array, where the OMERO Plus server sees it).

    A ``local_path`` folder without a ``.tiledb`` suffix gets ``<table_name>.tiledb``
    inside it. ``remote_path`` (a POSIX path on the server) may name the array
    or the folder that holds it; without it the server must see the array at
    the local path, which therefore has to be a POSIX path. A Windows drive
    path such as ``J:\\data\\t.tiledb`` is mapped with ``remote_path``.
    """
    local = _pure_local(local_path)
    if local.suffix != SUFFIX:
        if isinstance(local, Path) and local.exists() and not local.is_dir():
            raise errors.InvalidRequest(f"local_path {str(local)!r} is a file, not a folder "
                                        "or a .tiledb array path")
        local = local / f"{table_name}{SUFFIX}"
    if remote_path is None:
        resolved = str(local if isinstance(local, PureWindowsPath) else local.resolve())
        if _WINDOWS_PATH.match(resolved):
            raise errors.InvalidRequest(
                f"the OMERO Plus server cannot open the Windows path {resolved!r}: give "
                "remote_path, the array's (POSIX) path as the server sees it")
        remote = PurePosixPath(Path(resolved).as_posix())
    else:
        text = os.fspath(remote_path)
        if _WINDOWS_PATH.match(text) or not text.startswith("/"):
            raise errors.InvalidRequest(
                f"remote_path {text!r} must be an absolute POSIX path on the OMERO Plus server")
        remote = PurePosixPath(text)
        if remote.suffix != SUFFIX:
            remote = remote / local.name
    return local, remote


# -- registration over HTTPS ---------------------------------------------------------------------
def _client_error(exc: omero_plus.OmeroPlusError) -> errors.OmeroFlightError:
    """The client's exception for an OMERO Plus failure (the one translation)."""
    if isinstance(exc, omero_plus.MissingWebAddress):
        return errors.MissingConnectionDetails(exc.message)
    kind = errors.ConnectionFailed if exc.code == "unavailable" else errors.BY_CODE[exc.code]
    return kind(exc.message, code=None if exc.status is None else str(exc.status))


def web_base_url(web_url: str | None = None) -> str:
    """The OMERO.web base URL: ``web_url`` or ``OMERO_FLIGHT_WEB_URL``; must be HTTPS."""
    try:
        return omero_plus.web_base_url(web_url)
    except omero_plus.OmeroPlusError as exc:
        raise _client_error(exc) from None


def _is_bridge(connector: Any) -> bool:
    """Whether ``connector`` is a bridge connection (it has resolved details), not an
    omero-py client."""
    return isinstance(getattr(connector, "details", None), Details)


def _known_session_key(connector: Any, session_key: str | None) -> str | None:
    if session_key:
        return session_key
    if _is_bridge(connector):
        if connector.details.username == SESSION_USER and connector.details.password:
            return connector.details.password
    elif connector is not None and hasattr(getattr(connector, "c", None) or connector,
                                           "getSessionId"):
        return omero_session(connector)[0]
    return None


def session_key_of(connector: Any = None, session_key: str | None = None) -> str:
    """The OMERO session key: ``session_key``, a ``__session__`` connection's, or a client's."""
    key = _known_session_key(connector, session_key)
    if key is None:
        raise errors.MissingConnectionDetails(
            "registration needs an OMERO session key: pass session_key=, or a connection "
            f"logged in with username {SESSION_USER!r} and the session key as password, or an "
            "omero-py client (or a bridge connection to an OMERO-backed bridge)")
    return key


def _through_bridge(connector: Any, session_key: str | None) -> bool:
    """Whether the bridge registers for us: a bridge connection but no session key here."""
    return _is_bridge(connector) and _known_session_key(connector, session_key) is None


def register_table(
    connector: Any,
    remote_path: str | os.PathLike[str],
    table_name: str,
    links: Iterable[tuple[str, int]],
    token: str | None,
    prefix: str = "",
    *,
    web_url: str | None = None,
    session_key: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
) -> int:
    """Register a TileDB array with OMERO Plus in place; returns the new FileAnnotation id.

    ``remote_path`` is the array's path as the OMERO Plus server sees it,
    ``token`` the ``SecretToken`` :func:`create_tiledb` returned (the server
    checks it against the array's metadata). ``links`` are ``(type, id)``
    pairs. The request goes to OMERO.web at ``web_url`` (or
    ``OMERO_FLIGHT_WEB_URL``; HTTPS only) under ``prefix``, authenticated by
    the OMERO session key: ``session_key=``, or that of ``connector`` when it is
    a bridge connection logged in as ``__session__`` or an omero-py client.
    ``ca_file`` trusts a private certificate authority. With no session key
    at hand but a bridge connection (a user name and password login), the
    bridge registers with the caller's OMERO session instead (OMERO-backed
    bridges only; ``OMERO_FLIGHT_WEB_URL`` is then the bridge's setting).
    Refusals raise the client's errors with the server's message (wrong
    token: PermissionDenied).
    """
    server_path = os.fspath(remote_path)
    if not server_path.startswith("/"):
        raise errors.InvalidRequest(
            f"remote_path {server_path!r} must be the array's absolute POSIX path on the "
            "OMERO Plus server")
    selection.table_name(table_name)
    pairs = selection.links(list(links))
    if not pairs:
        raise errors.InvalidRequest("no OMERO objects to link the table to: give links")
    if not token:
        LOGGER.warning("registering %s without a SecretToken: OMERO Plus may refuse it, and "
                       "anyone who knows the path could register it", remote_path)
    if _through_bridge(connector, session_key):
        LOGGER.info("asking the bridge to register %s with OMERO Plus", server_path)
        result = connector.transport.action(
            ACTION_REGISTER_TABLE, uri=server_path, table_name=table_name,
            links=[list(pair) for pair in pairs], token=token, prefix=prefix)
        return int(result["annotation_id"])
    key = session_key_of(connector, session_key)
    try:
        return omero_plus.register(server_path, table_name, pairs, token, key, prefix=prefix,
                                   web_url=web_url, ca_file=ca_file, timeout=timeout)
    except omero_plus.OmeroPlusError as exc:
        raise _client_error(exc) from None


def create_remote_table(
    source: Any,
    table_name: str,
    local_path: str | os.PathLike[str],
    remote_path: str | os.PathLike[str] | None = None,
    links: Iterable[tuple[str, int]] = (),
    chunk_size: int | None = None,
    connector: Any = None,
    prefix: str = "",
    *,
    web_url: str | None = None,
    session_key: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
) -> int:
    """:func:`create_tiledb` at ``local_path`` then :func:`register_table` at ``remote_path``.

    Paths are mapped by :func:`remote_location`. Everything about the server
    (web address, session) is checked before any data is written.
    """
    local, remote = remote_location(local_path, remote_path, table_name)
    if not _through_bridge(connector, session_key):
        web_base_url(web_url)
        session_key_of(connector, session_key)
    if isinstance(local, PureWindowsPath):
        raise errors.InvalidRequest(f"cannot write the Windows path {str(local)!r} here")
    token = create_tiledb(source, local, chunk_size or DEFAULT_CHUNK_SIZE, progress=progress)
    try:
        return register_table(connector, remote, table_name, links, token, prefix,
                              web_url=web_url, session_key=session_key, ca_file=ca_file)
    except errors.OmeroFlightError as exc:
        raise type(exc)(
            f"{exc.message} (the TileDB array {str(local)!r} was written and is kept: register "
            "it later with register_table and the SecretToken in its metadata)", code=exc.code
        ) from None

