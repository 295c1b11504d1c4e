"""Plain CSV and CSV.gz files attached to OMERO (not OMERO.tables): read, download, upload.

The bridge streams a file's bytes as record batches with one binary column,
``data`` (``chunk_size`` bytes each). :func:`read_csv` parses them as they
arrive through a file-like object, so pandas never needs the whole file as
bytes; :func:`download_csv` writes each chunk as it is received;
:func:`upload_file` sends a file the same way, stored only once all of it
arrived.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from flight_client import errors, outputs
from flight_client.connection import Connection, use_connection
from flight_client.progress import bar
from flight_client.reading import object_ids
from flight_client.writing import upload_links
from flight_protocol.messages import (
    ACTION_FILE_INFO,
    FileTicket,
    FileUploadDescriptor,
    ProtocolError,
)

LOGGER = logging.getLogger(__name__)

DEFAULT_CHUNK_BYTES = 1_048_576
_GZIP_TYPES = ("application/x-gzip", "application/gzip")
_CSV_TYPES = ("text/csv", "application/csv", "text/comma-separated-values")


def infer_compression(mimetype: str | None, name: str | None) -> str | None:
    """``"gzip"`` or ``None`` for a CSV/CSV.gz file; InvalidRequest for anything else."""
    kind = (mimetype or "").lower()
    lower = (name or "").lower()
    if kind in _GZIP_TYPES or lower.endswith(".csv.gz") or lower.endswith(".gz"):
        return "gzip"
    if kind in _CSV_TYPES or lower.endswith(".csv"):
        return None
    raise errors.InvalidRequest(
        f"file {name!r} (mimetype {mimetype!r}) is not a CSV or CSV.gz file"
    )


def _compression(info: dict[str, Any], check_type: bool) -> str | None:
    """The file's compression; a file that is not CSV/CSV.gz is refused unless not checked."""
    try:
        return infer_compression(info.get("mimetype"), info.get("name"))
    except errors.InvalidRequest:
        if check_type:
            raise
        return None


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _file_ticket(file_id: Any, annotation_id: Any, chunk_size: int,
                 check_type: bool) -> FileTicket:
    fid, aid = object_ids(file_id, annotation_id)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise errors.InvalidRequest(f"chunk_size must be a positive number of bytes, "
                                    f"got {chunk_size!r}")
    try:
        return FileTicket(fid, aid, chunk_size, bool(check_type))
    except ProtocolError as exc:
        raise errors.InvalidRequest(str(exc)) from None


def file_info(conn: Connection, ticket: FileTicket) -> dict[str, Any]:
    """The file's ``file_id``, ``name``, ``mimetype`` and ``size``; an OMERO.table is refused."""
    info = conn.transport.action(ACTION_FILE_INFO, **ticket.to_json())
    if info.get("is_table"):
        raise errors.InvalidRequest(
            f"file {info.get('file_id')} ({info.get('name')!r}) is an OMERO.table, not a CSV "
            "file: read it with read_table (or download_table to save it)")
    return info


def file_chunks(conn: Connection, ticket: FileTicket, progress_bar: Any) -> Iterator[bytes]:
    """The file's bytes, chunk by chunk, as the bridge sends them."""
    for batch in conn.transport.stream(ticket.encode()):
        for value in batch.column("data"):
            chunk = value.as_py()
            progress_bar.update(len(chunk))
            yield chunk


def read_csv(
    file_id: int | None = None,
    annotation_id: int | None = None,
    column_names: Iterable[str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_BYTES,
    omero_connector: Any = None,
    server: str | None = None,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
    *,
    check_type: bool = True,
    progress: bool | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """Read a CSV or CSV.gz file attached to OMERO into a DataFrame.

    ``chunk_size`` is bytes per message. Other keyword arguments go to
    ``pandas.read_csv``; select columns with ``column_names``, not ``usecols``.
    Gzip is detected from the file's mimetype or name unless ``compression``
    is given. ``check_type=False`` reads any plain file (e.g. a ``.txt`` or
    ``.tsv`` with ``sep="\t"``), not only CSV and CSV.gz.
    """
    if "usecols" in kwargs:
        raise errors.InvalidRequest("provide 'column_names' for column selection, not 'usecols'")
    ticket = _file_ticket(file_id, annotation_id, chunk_size, check_type)
    with use_connection(omero_connector, server, port, username, password) as conn:
        info = file_info(conn, ticket)
        compression = _compression(info, check_type)
        if "compression" not in kwargs:
            kwargs["compression"] = compression
        LOGGER.info("reading file %s (%s) as CSV", info.get("file_id"), info.get("name"))
        progress_bar = bar("Reading CSV", info.get("size"), "B", progress)
        try:
            raw = _ChunkReader(file_chunks(conn, ticket, progress_bar))
            with io.BufferedReader(raw, buffer_size=chunk_size) as stream:
                usecols = None if column_names is None else list(column_names)
                return pd.read_csv(stream, usecols=usecols, **kwargs)
        finally:
            progress_bar.close()


def download_csv(
    target_path: str | os.PathLike[str],
    file_id: int | None = None,
    annotation_id: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_BYTES,
    check_type: bool = True,
    omero_connector: Any = None,
    server: str | None = None,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
    *,
    progress: bool | None = None,
) -> int:
    """Download a CSV/CSV.gz file attached to OMERO as it is; returns the bytes written.

    ``check_type=False`` allows any plain file (not OMERO.tables: use
    ``download_table`` for those). An existing target raises ``FileExistsError``.
    """
    ticket = _file_ticket(file_id, annotation_id, chunk_size, check_type)
    path = outputs.check_target(target_path)
    with use_connection(omero_connector, server, port, username, password) as conn:
        info = file_info(conn, ticket)
        if check_type:
            infer_compression(info.get("mimetype"), info.get("name"))
        progress_bar = bar("Downloading file", info.get("size"), "B", progress)
        written = 0
        fh = open(path, "xb")  # noqa: SIM115 - closed below, before a failed file is removed
        try:
            with fh:
                for chunk in file_chunks(conn, ticket, progress_bar):
                    fh.write(chunk)
                    written += len(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        finally:
            progress_bar.close()
    LOGGER.info("downloaded %d bytes to %s", written, path)
    return written


FILE_SCHEMA = pa.schema([("data", pa.binary())])


def _file_batches(path: Path, chunk_size: int) -> Iterator[pa.RecordBatch]:
    with path.open("rb") as fh:
        while data := fh.read(chunk_size):
            yield pa.RecordBatch.from_arrays([pa.array([data], pa.binary())], schema=FILE_SCHEMA)


def upload_file(
    source: str | os.PathLike[str],
    parent_id: int | None = None,
    parent_type: str = "Image",
    links: Iterable[tuple[str, int]] | None = None,
    file_name: str | None = None,
    mimetype: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_BYTES,
    omero_connector: Any = None,
    server: str | None = None,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
    *,
    progress: bool | None = None,
) -> int:
    """Attach a plain file (a CSV, CSV.gz, ...) to OMERO objects; returns its FileAnnotation id.

    Links follow :func:`~flight_client.upload_table`. The name defaults to the
    file's, the mimetype is guessed by the bridge from the name. The file is sent
    ``chunk_size`` bytes at a time and stored only if all of it was sent.
    """
    path = Path(source)
    if not path.is_file():
        raise errors.InvalidRequest(f"could not find file {str(path)!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise errors.InvalidRequest(f"chunk_size must be a positive number of bytes, "
                                    f"got {chunk_size!r}")
    try:
        descriptor = FileUploadDescriptor(file_name or path.name,
                                          upload_links(links, parent_id, parent_type),
                                          mimetype or "", explicit_commit=True)
    except ProtocolError as exc:
        raise errors.InvalidRequest(str(exc)) from None
    with use_connection(omero_connector, server, port, username, password) as conn:
        progress_bar = bar("Uploading file", path.stat().st_size, "B", progress)
        try:
            answer = conn.transport.upload(
                descriptor.encode(), FILE_SCHEMA, _file_batches(path, chunk_size),
                lambda batch: progress_bar.update(pc.binary_length(batch.column(0))[0].as_py()))
        finally:
            progress_bar.close()
    try:
        info = json.loads(answer or b"")
    except ValueError:
        raise errors.ServerError("the bridge's upload confirmation is not JSON") from None
    LOGGER.info("uploaded %s as file %s", path, info.get("file_id"))
    return int(info["annotation_id"])
