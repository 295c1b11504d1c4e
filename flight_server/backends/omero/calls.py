"""Every OMERO call goes through one gate: bounded concurrency, error translation, sessions.

OMERO.tables serializes HDF5 work per server, so flooding it with parallel
calls only queues them there. The gate lets at most ``max_calls`` calls run
at once across all users; a call that waits longer than ``wait`` seconds for
its turn fails with ``unavailable`` and a retry hint. Every Ice call has an
invocation timeout (``sessions.with_call_timeout``), so a frozen OMERO call
gives its slot back after at most that long instead of starving everyone.
When the Flight client goes away and its sign-in ends (logout, or the idle
timer once no stream holds it), the bridge closes that OMERO session: its
calls in flight fail at once and give their slots back, and its calls still
waiting for a slot stop waiting.

A call that finds its OMERO session gone drops the bridge's session, so the
next call with the same token is told to sign in again. ``Ice.ObjectNotExist``
is ambiguous: the session may be gone, or only the object called (a table
whose OMERO.tables service died or restarted); the gate asks OMERO
(``keepAlive``) before it forgets a session that is in fact alive.
"""

from __future__ import annotations

import contextlib
import threading
import time
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
from flight_server.errors import Unauthenticated, Unavailable

DEFAULT_MAX_CALLS = 8
DEFAULT_WAIT = 120.0
SLOT_POLL = 0.25  # seconds between checks that a waiting call's session is still open

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
        self._acquire(session, doing)
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

    def _acquire(self, session: OmeroSession, doing: str) -> None:
        """Wait for a slot, up to ``wait`` seconds, while the session is open."""
        deadline = time.monotonic() + self.wait
        while not self._slots.acquire(timeout=max(0.0, min(SLOT_POLL,
                                                           deadline - time.monotonic()))):
            if getattr(session, "closed", False):
                raise Unauthenticated(f"{clip(doing, MAX_DOING_TEXT)}: this sign-in has "
                                      "ended: sign in again")
            if time.monotonic() >= deadline:
                raise Unavailable(f"{clip(doing, MAX_DOING_TEXT)}: the bridge already runs "
                                  f"{self.max_calls} OMERO calls; retry in a few seconds")


def _alive(session: OmeroSession) -> bool:
    """Whether OMERO still answers for this session (one ``keepAlive``)."""
    try:
        session.sf.keepAlive(None)
    except Exception:  # noqa: BLE001 - any failure: the session is gone
        return False
    return True
