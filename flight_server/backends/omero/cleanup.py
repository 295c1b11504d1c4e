"""A spare OMERO session per upload, so what an upload started can be deleted after all.

An upload creates an OriginalFile (a table, or a plain file) as its user,
and deletes it when the upload is aborted. If the user's own OMERO session is
gone by then (OMERO ended it, an administrator killed it, the connection
dropped), that session cannot delete anything, and the bridge holds no OMERO
account of its own. So each upload first asks OMERO for a second session of
the same user (``ISession.createUserSession``, what omero-user-token uses) and
keeps only its key: unused while all goes well, closed when the upload ends,
and joined with a fresh client only to delete the unfinished file when the
first session cannot.

The spare is best effort: an OMERO that refuses it leaves uploads working as
before (deleted through the user's session only), and says so in the log.
"""

from __future__ import annotations

import logging
from typing import Any

import omero.model
from omero.rtypes import rstring

from flight_server.backends.omero.calls import CallGate
from flight_server.backends.omero.errors import omero_errors
from flight_server.backends.omero.sessions import OmeroSession

log = logging.getLogger(__name__)

#: Lifetime and idle time asked for the spare session (OMERO may cap them).
SPARE_SECONDS = 24 * 3600


class SpareSession:
    """The key of a second OMERO session of an upload's user; see the module docstring."""

    def __init__(self, gate: CallGate, session: OmeroSession, key: str) -> None:
        self._gate, self._session, self._key = gate, session, key

    @classmethod
    def create(cls, gate: CallGate, session: OmeroSession) -> SpareSession | None:
        """A spare session for ``session``'s user, or None when OMERO will not make one."""
        millis = SPARE_SECONDS * 1000
        try:
            with gate.call(session, "preparing the upload's cleanup session") as sf:
                spare = sf.getSessionService().createUserSession(millis, millis,
                                                                 session.group_name)
            return cls(gate, session, spare.uuid.val)
        except Exception:  # noqa: BLE001 - best effort, see the module docstring
            log.warning("OMERO made no spare session for %s: an upload whose session ends "
                        "may leave its file behind", session.username, exc_info=True)
            return None

    def delete_file(self, file_id: int, ctx: dict[str, str]) -> bool:
        """Delete OriginalFile ``file_id`` (with its annotations) in the spare session."""
        client = self._gate.sessions.new_client()
        try:
            with omero_errors("joining the upload's cleanup session", (self._key,)):
                client.joinSession(self._key)
                client.getSession().getUpdateService().deleteObject(
                    omero.model.OriginalFileI(file_id, False), ctx)
            log.info("OriginalFile %s of %s deleted through the upload's cleanup session",
                     file_id, self._session.username)
            return True
        except Exception:  # noqa: BLE001 - best effort; log what is left
            log.error("could not delete the unfinished OriginalFile %s of %s", file_id,
                      self._session.username, exc_info=True)
            return False
        finally:
            _close_joined(client)  # the spare session ends with it: nothing left to close
            self._key = ""

    def close(self) -> None:
        """End the spare session (through the user's session if it lives, else by joining)."""
        key, self._key = self._key, ""
        if not key:
            return
        try:
            with self._gate.call(self._session, "closing the upload's cleanup session") as sf:
                session = omero.model.SessionI()
                session.uuid = rstring(key)
                sf.getSessionService().closeSession(session)
            return
        except Exception:  # noqa: BLE001 - the user's session may be gone: join and close
            log.debug("closing a spare session through the user's session failed",
                      exc_info=True)
        client = self._gate.sessions.new_client()
        try:
            client.joinSession(key)
        except Exception:  # noqa: BLE001 - already gone is fine; OMERO expires it otherwise
            log.debug("joining a spare session to close it failed", exc_info=True)
        _close_joined(client)


def _close_joined(client: Any) -> None:
    """End the session a client joined, and the client."""
    try:
        client.killSession()
    except Exception:  # noqa: BLE001 - closing what may already be closed
        try:
            client.closeSession()
        except Exception:  # noqa: BLE001
            log.debug("closing a joined OMERO client failed", exc_info=True)


class HeldUpload:
    """What an upload holds until it ends: its user's session (``OmeroSession.hold``, so
    the idle timer spares it) and its :class:`SpareSession`; ``_finish`` lets go of both."""

    _session: OmeroSession
    _spare: SpareSession | None
    _held: bool

    def _finish(self) -> None:
        """End the spare session and the hold on the user's session (once)."""
        spare, self._spare = self._spare, None
        try:
            if spare is not None:
                spare.close()
        finally:
            if self._held:
                self._held = False
                self._session.release()
