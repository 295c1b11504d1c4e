"""A new OMERO.table written as batches arrive, annotated and linked on commit.

The schema was checked by ``Backend.create_table`` (``columns.check_hdf5_header``:
HDF5's 64 KiB limit on the compound type), so a table OMERO.tables could not create
is refused before anything exists in OMERO. The table is created
(``SharedResources.newTable``) in the group of its link targets, initialized
from the stored Arrow schema, and each batch is sent with ``addData`` in
pieces of at most ``MAX_ROWS_PER_CALL`` rows, about ``MAX_CELLS_PER_CALL``
cells and ``call_bytes`` bytes of values: a call larger than OMERO's
``Ice.MessageSizeMax`` makes OMERO drop the connection and the user's session
with it, so each call stays well under the limit the client was set up with
(``sessions.message_size_max``). A single row too large for any call is
refused with ``invalid_argument`` before it is sent.

``commit`` creates the FileAnnotation and one ``<Type>AnnotationLink`` per
target, as omero2pandas does, then closes the table. ``abort`` deletes the
table's OriginalFile (with whatever annotation and links were made), so a
failed upload leaves nothing behind; when the user's session can no longer
do it, the upload's spare session does (``cleanup``). From creation to commit
or abort the user's session is in use (``OmeroSession.hold``): the idle timer
never ends it mid-upload.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import Ice
import numpy as np
import omero.model
import pyarrow as pa
import pyarrow.compute as pc
from omero.rtypes import rstring, unwrap

from flight_protocol import columns as cols
from flight_server.backends.base import TableWriter, UploadResult
from flight_server.backends.omero.calls import CallGate, in_group
from flight_server.backends.omero.cleanup import HeldUpload, SpareSession
from flight_server.backends.omero.grid import empty_column, fill
from flight_server.backends.omero.sessions import OmeroSession, message_size_max
from flight_server.errors import InvalidArgument, Unavailable

log = logging.getLogger(__name__)

MAX_ROWS_PER_CALL = 50_000
MAX_CELLS_PER_CALL = 2_000_000
#: Bytes of values per ``addData`` at most ...
MAX_CALL_BYTES = 64 << 20
#: ... and at most this share of the Ice message limit (headroom for Ice's own encoding).
MESSAGE_SHARE = 4
#: Bytes Ice adds to each string (its size) and to each call's columns, at most.
STRING_OVERHEAD = 5


def rows_per_call(schema: pa.Schema) -> int:
    """Rows per ``addData``: at most 50,000 and about 2 million cells."""
    cells = sum(f.type.list_size if pa.types.is_fixed_size_list(f.type) else 1 for f in schema)
    return max(1, min(MAX_ROWS_PER_CALL, MAX_CELLS_PER_CALL // max(1, cells)))


def call_bytes(message_limit: int) -> int:
    """Bytes of values per ``addData`` under an Ice message limit of ``message_limit`` bytes."""
    return max(1 << 20, min(MAX_CALL_BYTES, message_limit // MESSAGE_SHARE))


def row_bytes(batch: pa.RecordBatch, schema: pa.Schema) -> np.ndarray:
    """What each row of a conformed batch weighs on the wire (int64 per row)."""
    sizes = np.zeros(batch.num_rows, dtype=np.int64)
    for arr, f in zip(batch.columns, schema, strict=True):
        if cols.column_type_of(f) == cols.STRING:
            lengths = pc.binary_length(arr).fill_null(0)
            sizes += lengths.to_numpy(zero_copy_only=False).astype(np.int64) + STRING_OVERHEAD
        elif len(arr):
            sizes += -(-arr.nbytes // len(arr))  # fixed width (masks: their average)
    return sizes


def call_ranges(sizes: np.ndarray, max_rows: int, max_bytes: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` row ranges of at most ``max_rows`` rows and ``max_bytes`` bytes."""
    ends = np.cumsum(sizes)
    start, n = 0, len(sizes)
    while start < n:
        before = int(ends[start - 1]) if start else 0
        stop = min(int(np.searchsorted(ends, before + max_bytes, side="right")),
                   start + max_rows, n)
        if stop == start:
            raise InvalidArgument(
                f"row {start} holds {int(sizes[start]):,} bytes, more than one OMERO call may "
                f"carry ({max_bytes:,} bytes under OMERO's Ice.MessageSizeMax): store such "
                "values as a file instead")
        yield start, stop
        start = stop


def save_annotation(update: Any, file_id: int, links: Sequence[tuple[str, int]],
                    ctx: dict[str, str], description: str = "") -> int:
    """Create the FileAnnotation of an OriginalFile and link it to each target; its id."""
    annotation = omero.model.FileAnnotationI()
    annotation.file = omero.model.OriginalFileI(file_id, False)
    if description:
        annotation.description = rstring(description)
    annotation_id = unwrap(update.saveAndReturnObject(annotation, ctx).id)
    batch = []
    for kind, object_id in links:
        link = getattr(omero.model, f"{kind}AnnotationLinkI")()
        link.link(getattr(omero.model, f"{kind}I")(object_id, False),
                  omero.model.FileAnnotationI(annotation_id, False))
        batch.append(link)
    if batch:
        update.saveArray(batch, ctx)
    return annotation_id


class OmeroTableWriter(HeldUpload, TableWriter):
    """Writes one table as one caller; see the module docstring."""

    def __init__(self, gate: CallGate, session: OmeroSession, name: str, schema: pa.Schema,
                 links: Sequence[tuple[str, int]], description: str, group_id: int) -> None:
        self._gate, self._session = gate, session
        self._name, self._schema, self._links = name, schema, tuple(links)
        self._description = description
        self._ctx = in_group(group_id)
        self._columns = [empty_column(f) for f in schema]
        self._step = rows_per_call(schema)
        self._call_bytes = call_bytes(message_size_max(session.client))
        self._rows = 0
        self._table: Any = None
        self._file_id: int | None = None
        self._done = False
        self._spare: SpareSession | None = None
        session.hold()
        self._held = True
        try:
            self._spare = SpareSession.create(gate, session)
            with self._call("creating the table") as sf:
                resources = sf.sharedResources(self._ctx)
                repository = unwrap(resources.repositories().descriptions[0].id)
                self._table = resources.newTable(repository, name, self._ctx)
                if self._table is not None:
                    self._file_id = unwrap(self._table.getOriginalFile().id)
            if self._table is None:
                raise InvalidArgument("OMERO.tables is not enabled on this OMERO server")
            with self._call("initializing the table's columns"):
                self._table.initialize(self._columns)
        except BaseException:
            self.abort()
            raise

    def _call(self, doing: str) -> Any:
        return self._gate.call(self._session, f"{doing} (upload {self._name!r})")

    def append(self, batch: pa.RecordBatch) -> None:
        if self._done:
            raise InvalidArgument("this upload is already finished")
        self._session.touch()
        sizes = row_bytes(batch, self._schema)
        for start, stop in call_ranges(sizes, self._step, self._call_bytes):
            part = batch.slice(start, stop - start)
            for column, arr, f in zip(self._columns, part.columns, self._schema, strict=True):
                fill(column, arr, f)
            doing = f"adding rows {self._rows}..{self._rows + part.num_rows}"
            try:
                with self._call(doing):
                    self._table.addData(self._columns)
            except Unavailable as exc:
                if not isinstance(exc.__cause__, Ice.ConnectionLostException):
                    raise
                sent = int(sizes[start:stop].sum())
                raise Unavailable(
                    f"{doing} (upload {self._name!r}): OMERO dropped the connection during a "
                    f"call of {sent:,} bytes, and the user's OMERO session with it: sign in "
                    "again and upload again; if it happens again, OMERO's Ice.MessageSizeMax "
                    f"may be below {self._call_bytes:,} bytes (ask its administrator)") from exc
            self._rows += part.num_rows
        for column in self._columns:  # let go of the values sent
            _clear(column)

    def commit(self) -> UploadResult:
        if self._done:
            raise InvalidArgument("this upload is already finished")
        with self._call("annotating the table") as sf:
            file_id = unwrap(self._table.getOriginalFile().id)
            annotation_id = save_annotation(sf.getUpdateService(), file_id, self._links,
                                            self._ctx, self._description)
        with self._call("closing the table"):
            self._table.close()
        self._done, self._table = True, None
        self._finish()
        log.info("table %s (OriginalFile %d, FileAnnotation %d, %d rows) uploaded to OMERO by %s",
                 self._name, file_id, annotation_id, self._rows, self._session.username)
        return UploadResult(annotation_id=annotation_id, file_id=file_id, rows=self._rows)

    def abort(self) -> None:
        self._done = True
        table, self._table = self._table, None
        file_id, self._file_id = self._file_id, None
        try:
            if table is not None:
                self._delete(table, file_id)
        finally:
            self._finish()

    def _delete(self, table: Any, file_id: int | None) -> None:
        """Delete the unfinished table: as the user, else through the spare session."""
        try:
            with self._call("deleting the unfinished table"):
                table.delete()
            return
        except Exception:  # noqa: BLE001 - the session may be gone: try the spare
            log.warning("deleting the unfinished table %r of %s as the user failed",
                        self._name, self._session.username, exc_info=True)
        try:
            table.close()
        except Exception:  # noqa: BLE001 - the table may already be closed by OMERO
            log.debug("closing an unfinished table failed", exc_info=True)
        if file_id is not None and self._spare is not None \
                and self._spare.delete_file(file_id, self._ctx):
            return
        log.error("could not delete the unfinished table %r (OriginalFile %s) of %s",
                  self._name, file_id, self._session.username)


def _clear(column: Any) -> None:
    """Drop the values a column object holds (all but the header OMERO needs)."""
    if hasattr(column, "values"):
        column.values = []
