"""A new OMERO.table written as batches arrive, annotated and linked on commit.

The table is created (``SharedResources.newTable``) in the group of its link
targets, initialized from the stored Arrow schema, and each batch is sent with
``addData`` in pieces of at most ``MAX_ROWS_PER_CALL`` rows and about
``MAX_CELLS_PER_CALL`` cells. ``commit`` creates the FileAnnotation and one
``<Type>AnnotationLink`` per target, as omero2pandas does, then closes the
table. ``abort`` deletes the table's OriginalFile (with whatever annotation
and links were made), so a failed upload leaves nothing behind.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import omero.model
import pyarrow as pa
from omero.rtypes import rstring, unwrap

from flight_server.backends.base import TableWriter, UploadResult
from flight_server.backends.omero.calls import CallGate, in_group
from flight_server.backends.omero.grid import empty_column, fill
from flight_server.backends.omero.sessions import OmeroSession
from flight_server.errors import InvalidArgument

log = logging.getLogger(__name__)

MAX_ROWS_PER_CALL = 50_000
MAX_CELLS_PER_CALL = 2_000_000


def rows_per_call(schema: pa.Schema) -> int:
    """Rows per ``addData``: at most 50,000 and about 2 million cells."""
    cells = sum(f.type.list_size if pa.types.is_fixed_size_list(f.type) else 1 for f in schema)
    return max(1, min(MAX_ROWS_PER_CALL, MAX_CELLS_PER_CALL // max(1, cells)))


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


class OmeroTableWriter(TableWriter):
    """Writes one table as one caller; see the module docstring."""

    def __init__(self, gate: CallGate, session: OmeroSession, name: str, schema: pa.Schema,
                 links: Sequence[tuple[str, int]], description: str, group_id: int) -> None:
        self._gate, self._session = gate, session
        self._name, self._schema, self._links = name, schema, tuple(links)
        self._description = description
        self._ctx = in_group(group_id)
        self._columns = [empty_column(f) for f in schema]
        self._step = rows_per_call(schema)
        self._rows = 0
        self._table: Any = None
        self._done = False
        with self._call("creating the table") as sf:
            resources = sf.sharedResources(self._ctx)
            repository = unwrap(resources.repositories().descriptions[0].id)
            self._table = resources.newTable(repository, name, self._ctx)
        if self._table is None:
            raise InvalidArgument("OMERO.tables is not enabled on this OMERO server")
        try:
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
        for start in range(0, batch.num_rows, self._step):
            part = batch.slice(start, self._step)
            for column, arr, f in zip(self._columns, part.columns, self._schema, strict=True):
                fill(column, arr, f)
            with self._call(f"adding rows {self._rows}..{self._rows + part.num_rows}"):
                self._table.addData(self._columns)
            self._rows += part.num_rows

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
        log.info("table %s (OriginalFile %d, FileAnnotation %d, %d rows) uploaded to OMERO by %s",
                 self._name, file_id, annotation_id, self._rows, self._session.username)
        return UploadResult(annotation_id=annotation_id, file_id=file_id, rows=self._rows)

    def abort(self) -> None:
        self._done = True
        table, self._table = self._table, None
        if table is None:
            return
        try:
            with self._call("deleting the unfinished table"):
                table.delete()
        except Exception:  # noqa: BLE001 - best effort; log what may be left
            log.error("could not delete the unfinished table %r of %s", self._name,
                      self._session.username, exc_info=True)
            try:
                table.close()
            except Exception:  # noqa: BLE001
                pass
