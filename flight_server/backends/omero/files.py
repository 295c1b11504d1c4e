"""Plain OriginalFiles (CSV, CSV.gz, ...) through OMERO's RawFileStore, as the caller.

Downloads and uploads keep the caller's session in use while they run
(``OmeroSession.hold``); an aborted upload deletes its OriginalFile, through
the upload's spare session when the caller's own is gone (``cleanup``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import omero.model
from omero.rtypes import rstring, unwrap

from flight_server.backends.base import FileInfo, FileWriter
from flight_server.backends.omero.calls import ALL_GROUPS, CallGate, in_group
from flight_server.backends.omero.cleanup import HeldUpload, SpareSession
from flight_server.backends.omero.sessions import OmeroSession
from flight_server.backends.omero.writer import save_annotation
from flight_server.errors import InvalidArgument

log = logging.getLogger(__name__)

MAX_READ = 8 << 20  # bytes per RawFileStore.read, well under Ice's message limit


def _close(gate: CallGate, session: OmeroSession, store: Any) -> None:
    try:
        with gate.call(session, "closing the RawFileStore"):
            store.close()
    except Exception:  # noqa: BLE001 - the session may be gone, and the store with it
        log.debug("closing a RawFileStore failed", exc_info=True)


def file_chunks(gate: CallGate, session: OmeroSession, info: FileInfo,
                chunk_size: int) -> Iterator[bytes]:
    """The file's bytes in chunks of at most ``chunk_size``; the store is always closed."""
    chunk_size = max(1, min(int(chunk_size), MAX_READ))
    what = f"reading OriginalFile {info.file_id} ({info.name!r})"
    session.hold()  # in use for the whole stream, however slowly it is read
    try:
        with gate.call(session, what) as sf:
            store = sf.createRawFileStore(ALL_GROUPS)
    except BaseException:
        session.release()
        raise
    try:
        with gate.call(session, what):
            store.setFileId(info.file_id, ALL_GROUPS)
            size = store.size()
        offset = 0
        while offset < size:
            with gate.call(session, what):
                data = store.read(offset, min(chunk_size, size - offset))
            if not data:
                break
            offset += len(data)
            yield bytes(data)
    finally:
        try:
            _close(gate, session, store)
        finally:
            session.release()


class OmeroFileWriter(HeldUpload, FileWriter):
    """A new OriginalFile written through a RawFileStore, annotated and linked on commit."""

    def __init__(self, gate: CallGate, session: OmeroSession, name: str, mimetype: str,
                 links: Sequence[tuple[str, int]], group_id: int,
                 describe: Any) -> None:
        self._gate, self._session, self._name = gate, session, name
        self._links, self._ctx, self._describe = tuple(links), in_group(group_id), describe
        self._offset = 0
        self._store: Any = None
        self._file_id: int | None = None
        ofile = omero.model.OriginalFileI()
        ofile.name = rstring(name)
        ofile.path = rstring("/omero-flight/")
        ofile.mimetype = rstring(mimetype)
        session.hold()
        self._held = True
        self._spare: SpareSession | None = None
        try:
            self._spare = SpareSession.create(gate, session)
            with self._call("creating the file") as sf:
                self._file_id = unwrap(
                    sf.getUpdateService().saveAndReturnObject(ofile, self._ctx).id)
                self._store = sf.createRawFileStore(self._ctx)
            with self._call("opening the file for writing"):
                self._store.setFileId(self._file_id, self._ctx)
        except BaseException:
            self.abort()
            raise

    def _call(self, doing: str) -> Any:
        return self._gate.call(self._session, f"{doing} (upload {self._name!r})")

    def write(self, data: bytes) -> None:
        if self._store is None:
            raise InvalidArgument("this upload is already finished")
        with self._call("writing"):
            self._store.write(data, self._offset, len(data), self._ctx)
        self._offset += len(data)

    def commit(self) -> FileInfo:
        if self._store is None or self._file_id is None:
            raise InvalidArgument("this upload is already finished")
        with self._call("saving the file") as sf:
            self._store.save(self._ctx)
            save_annotation(sf.getUpdateService(), self._file_id, self._links, self._ctx)
        store, self._store = self._store, None
        _close(self._gate, self._session, store)
        self._finish()
        return self._describe(self._file_id)

    def abort(self) -> None:
        store, self._store = self._store, None
        try:
            if store is not None:
                _close(self._gate, self._session, store)
            file_id, self._file_id = self._file_id, None
            if file_id is not None:
                self._delete(file_id)
        finally:
            self._finish()

    def _delete(self, file_id: int) -> None:
        try:
            with self._call("deleting the unfinished file") as sf:
                sf.getUpdateService().deleteObject(omero.model.OriginalFileI(file_id, False),
                                                   self._ctx)
            return
        except Exception:  # noqa: BLE001 - the session may be gone: try the spare
            log.warning("deleting the unfinished OriginalFile %s as the user failed", file_id,
                        exc_info=True)
        if self._spare is None or not self._spare.delete_file(file_id, self._ctx):
            log.error("could not delete the unfinished OriginalFile %s", file_id)

