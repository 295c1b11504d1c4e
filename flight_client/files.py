"""Plain CSV and CSV.gz files attached to OMERO (not OMERO.tables): read, download, upload.

The bridge streams a file's bytes as record batches with one binary column,
``data`` (``chunk_size`` bytes each). :func:`read_csv` parses them as they
arrive through a file-like object, so pandas never needs the whole file as
bytes; :func:`download` writes each chunk as it is received;
:func:`upload` sends a file the same way, stored only once all of it
arrived. The public functions are :meth:`flight_client.Connection.read_csv`,
``download_csv`` and ``upload_file`` (and the module functions of the same names).
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

from flight_client import errors
from flight_client.progress import bar
from flight_client.transport import Transport
from flight_protocol.messages import ACTION_FILE_INFO, FileTicket, FileUploadDescriptor

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


def file_info(transport: Transport, ticket: FileTicket) -> dict[str, Any]:
    """The file's ``file_id``, ``name``, ``mimetype`` and ``size``; an OMERO.table is refused."""
    info = transport.action(ACTION_FILE_INFO, **ticket.to_json())
    if info.get("is_table"):
        raise errors.InvalidRequest(
            f"file {info.get('file_id')} ({info.get('name')!r}) is an OMERO.table, not a CSV "
            "file: read it with read_table (or download_table to save it)")
    return info


def file_chunks(transport: Transport, ticket: FileTicket,
                progress_bar: Any) -> Iterator[bytes]:
    """The file's bytes, chunk by chunk, as the bridge sends them."""
    for batch in transport.stream(ticket.encode()):
        for value in batch.column("data"):
            chunk = value.as_py()
            progress_bar.update(len(chunk))
            yield chunk


def read_csv(transport: Transport, ticket: FileTicket, column_names: Iterable[str] | None,
             check_type: bool, progress: bool | None, kwargs: dict[str, Any]) -> pd.DataFrame:
    """A plain CSV/CSV.gz file parsed by ``pandas.read_csv`` as its chunks arrive."""
    if "usecols" in kwargs:
        raise errors.InvalidRequest("provide 'column_names' for column selection, not 'usecols'")
    info = file_info(transport, ticket)
    compression = _compression(info, check_type)
    if "compression" not in kwargs:
        kwargs["compression"] = compression
    LOGGER.info("reading file %s (%s) as CSV", info.get("file_id"), info.get("name"))
    progress_bar = bar("Reading CSV", info.get("size"), "B", progress)
    try:
        raw = _ChunkReader(file_chunks(transport, ticket, progress_bar))
        with io.BufferedReader(raw, buffer_size=ticket.chunk_size or DEFAULT_CHUNK_BYTES) \
                as stream:
            usecols = None if column_names is None else list(column_names)
            return pd.read_csv(stream, usecols=usecols, **kwargs)
    finally:
        progress_bar.close()


def download(transport: Transport, ticket: FileTicket, path: Path,
             progress: bool | None) -> int:
    """Write a plain file to a new local file (``path``, checked by
    :func:`flight_client.outputs.check_target`) as its chunks arrive; the bytes written.

    A CSV/CSV.gz file unless the ticket says not to check; a partial file is removed.
    """
    info = file_info(transport, ticket)
    if ticket.check_type:
        infer_compression(info.get("mimetype"), info.get("name"))
    progress_bar = bar("Downloading file", info.get("size"), "B", progress)
    written = 0
    fh = open(path, "xb")  # noqa: SIM115 - closed below, before a failed file is removed
    try:
        with fh:
            for chunk in file_chunks(transport, ticket, progress_bar):
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


def local_file(source: str | os.PathLike[str]) -> Path:
    """The path of a local file to upload; InvalidRequest when there is none."""
    path = Path(source)
    if not path.is_file():
        raise errors.InvalidRequest(f"could not find file {str(path)!r}")
    return path


def upload(transport: Transport, path: Path, descriptor: FileUploadDescriptor, chunk_size: int,
           progress: bool | None) -> int:
    """Send a local file ``chunk_size`` bytes at a time; its new FileAnnotation id.

    The bridge stores it only if all of it was sent.
    """
    progress_bar = bar("Uploading file", path.stat().st_size, "B", progress)
    try:
        answer = transport.upload(
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
