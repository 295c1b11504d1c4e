"""Every OMERO call goes through one gate: bounded concurrency, error translation, sessions.

OMERO.tables serializes HDF5 work per server, so flooding it with parallel
calls only queues them there. The gate lets at most ``max_calls`` calls run
at once across all users; a call that waits longer than ``wait`` seconds for
its turn fails with ``unavailable`` and a retry hint. Every Ice call has an
invocation timeout (``sessions.with_call_timeout``), so a frozen OMERO call
gives its slot back after at most that long instead of starving everyone.

A call that finds its OMERO session gone drops the bridge's session, so the
next call with the same token is told to sign in again. ``Ice.ObjectNotExist``
is ambiguous: the session may be gone, or only the object called (a table
whose OMERO.tables service died or restarted); the gate asks OMERO
(``keepAlive``) before it forgets a session that is in fact alive.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import Ice

from flight_server.backends.omero.errors import (
    MAX_DOING_TEXT,
    SessionGone,
    clip,
    omero_errors,
)
from flight_server.backends.omero.sessions import OmeroSession, SessionManager
from flight_server.errors import Unavailable

DEFAULT_MAX_CALLS = 8
DEFAULT_WAIT = 120.0

#: Call context reading across all the user's groups, as omero2pandas does.
ALL_GROUPS = {"omero.group": "-1"}


def in_group(group_id: int) -> dict[str, str]:
    """Call context for creating objects in one group."""
    return {"omero.group": str(int(group_id))}


class CallGate:
    """Bounds concurrent OMERO calls and translates their errors."""

    def __init__(self, sessions: SessionManager, max_calls: int = DEFAULT_MAX_CALLS,
                 wait: float = DEFAULT_WAIT) -> None:
        if max_calls < 1:
            raise ValueError("max_calls must be at least 1")
        self.sessions = sessions
        self.max_calls = max_calls
        self.wait = wait
        self._slots = threading.BoundedSemaphore(max_calls)

    @contextlib.contextmanager
    def call(self, session: OmeroSession, doing: str) -> Iterator[Any]:
        """``with gate.call(session, "reading ...") as sf:`` run OMERO calls as that user."""
        if not self._slots.acquire(timeout=self.wait):
            raise Unavailable(f"{clip(doing, MAX_DOING_TEXT)}: the bridge already runs "
                              f"{self.max_calls} OMERO calls; retry in a few seconds")
        try:
            session.touch()
            with omero_errors(doing, session.session_keys):
                yield session.sf
        except SessionGone as exc:
            if isinstance(exc.__cause__, Ice.ObjectNotExistException) and _alive(session):
                raise Unavailable(f"{clip(doing, MAX_DOING_TEXT)}: OMERO no "
                                  "longer has this object (its service, such as OMERO.tables, "
                                  "may have restarted); open it again") from exc
            self.sessions.forget(session, "OMERO ended the session")
            raise
        finally:
            self._slots.release()


def _alive(session: OmeroSession) -> bool:
    """Whether OMERO still answers for this session (one ``keepAlive``)."""
    try:
        session.sf.keepAlive(None)
    except Exception:  # noqa: BLE001 - any failure: the session is gone
        return False
    return True
