"""``do_put`` streams into new tables and plain files, written as batches arrive.

A table whose string columns all declare ``omero.string_size`` is written
straight through. Otherwise the string widths are only known at the end, so
the conformed batches are spooled to a temporary Arrow IPC file on disk while
the widths are measured, then copied into the table: memory stays bounded
either way. Anything that goes wrong (a bad value, a client that disconnects
or ends without the commit marker it promised, a server that stops) aborts the
backend writer, so nothing is left behind. The table format, the HDF5 header and
the link targets are checked before anything is received, by the backend contract
(``Backend.create_table``, or ``Backend.check_upload`` before spooling).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight

from flight_protocol import columns as cols
from flight_protocol.messages import COMMIT_METADATA, FileUploadDescriptor, UploadDescriptor
from flight_server.backends.base import Backend, Caller, FileInfo, UploadResult
from flight_server.errors import InvalidArgument, Unavailable

log = logging.getLogger(__name__)


def _never() -> bool:
    return False


_CANCELLED = ("the upload was cancelled (the client went away, or the server is stopping); "
              "nothing was stored")


def _chunks(reader: flight.MetadataRecordBatchReader, explicit_commit: bool,
            cancelled: Callable[[], bool]) -> Iterator[pa.RecordBatch]:
    """The stream's batches; refuse a stream that was cancelled or lacks its commit marker.

    gRPC ends the server's read of a vanished client like a normal end of
    stream; only the call's cancellation flag tells the two apart. The flag is
    also checked between batches, so a server that stops cuts the upload short.
    """
    committed = False
    while True:
        if cancelled():
            raise Unavailable(_CANCELLED)
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            break
        if committed:
            raise InvalidArgument("data arrived after the commit marker")
        if chunk.app_metadata is not None and chunk.app_metadata.to_pybytes() == COMMIT_METADATA:
            committed = True
        if chunk.data is not None:
            yield _valid(chunk.data)
    if cancelled():
        raise Unavailable(_CANCELLED)
    if explicit_commit and not committed:
        raise InvalidArgument("the upload ended without its commit marker; nothing was stored")


def _valid(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A batch whose buffers hold what its type says (UTF-8 strings above all): a client
    building arrays by hand can send anything, and a bad cell must be refused here, not
    stored and found unreadable later. String cells with NUL are refused too: HDF5's
    fixed-width strings end at the first NUL, so the value would be cut silently."""
    try:
        batch.validate(full=True)
    except pa.ArrowInvalid as exc:
        raise InvalidArgument(f"the upload holds invalid data: {str(exc)[:200]}") from None
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)) \
                and pc.any(pc.match_substring(column, "\x00")).as_py():
            raise InvalidArgument(f"string column {name[:100]!r} holds a value with a NUL "
                                  "character (\\x00), which HDF5 strings cannot store")
    return batch


@contextlib.contextmanager
def _spool_file(spool_dir: str | Path | None) -> Iterator[Path]:
    fd, name = tempfile.mkstemp(prefix="omero-flight-spool-", suffix=".arrow",
                                dir=None if spool_dir is None else str(spool_dir))
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def receive_table(backend: Backend, caller: Caller, desc: UploadDescriptor,
                  reader: flight.MetadataRecordBatchReader,
                  spool_dir: str | Path | None = None,
                  cancelled: Callable[[], bool] = _never) -> UploadResult:
    """Create a table from a ``do_put`` stream; see the module docstring."""
    backend.check_format(desc.format)  # before the schema is mapped
    stored = cols.omero_schema(reader.schema)
    unsized = [f.name for f in stored
               if cols.column_type_of(f) == cols.STRING and cols.string_size_of(f) is None]
    chunks = _chunks(reader, desc.explicit_commit, cancelled)
    if not unsized:
        return _write(backend, caller, desc, stored, (cols.conform_batch(b, stored)
                                                      for b in chunks))
    # Refuse before receiving anything: the spool may hold a whole table.
    backend.check_upload(caller, desc.links, desc.format, stored)
    with _spool_file(spool_dir) as spool:
        widths = dict.fromkeys(unsized, 0)
        with pa.OSFile(str(spool), "wb") as sink, pa.ipc.new_file(sink, stored) as ipc:
            for batch in chunks:
                conformed = cols.conform_batch(batch, stored)
                for name, width in cols.string_widths(conformed.select(unsized)).items():
                    widths[name] = max(widths[name], width)
                ipc.write_batch(conformed)
        final = cols.with_string_sizes(stored, widths)
        with pa.memory_map(str(spool)) as source:
            spooled = pa.ipc.open_file(source)
            batches = (spooled.get_batch(i) for i in range(spooled.num_record_batches))
            return _write(backend, caller, desc, final, batches)


def _write(backend: Backend, caller: Caller, desc: UploadDescriptor, schema: pa.Schema,
           batches: Iterator[pa.RecordBatch]) -> UploadResult:
    writer = backend.create_table(caller, desc.name, schema, desc.links, desc.description,
                                  desc.format)
    try:
        for batch in batches:
            writer.append(batch)
        return writer.commit()
    except BaseException:
        writer.abort()
        raise


def receive_file(backend: Backend, caller: Caller, desc: FileUploadDescriptor,
                 reader: flight.MetadataRecordBatchReader,
                 cancelled: Callable[[], bool] = _never) -> FileInfo:
    """Store a plain file sent as a stream with one binary column ``data``."""
    schema = reader.schema
    if schema.names != ["data"] or not (pa.types.is_binary(schema.field(0).type)
                                        or pa.types.is_large_binary(schema.field(0).type)):
        raise InvalidArgument(f"a file upload has one binary column 'data', got {schema}")
    writer = backend.create_file(caller, desc.name, desc.mimetype, desc.links)
    try:
        for batch in _chunks(reader, desc.explicit_commit, cancelled):
            for value in batch.column(0):
                data = value.as_buffer()
                if data is not None:
                    writer.write(data.to_pybytes())
        return writer.commit()
    except BaseException:
        writer.abort()
        raise
