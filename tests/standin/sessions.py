"""OMERO sessions: log in with a password, join by session key, close, expire when idle."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.standin.catalog import Catalog, PermissionDenied, User


@dataclass
class Session:
    uuid: str
    user: User
    group_id: int
    agent: str
    started: float = field(default_factory=time.time)
    last_access: float = field(default_factory=time.time)
    refcount: int = 0
    closed: bool = False
    id: int = 0


class Sessions:
    """All sessions of the stand-in; ``on_close`` callbacks run when one closes."""

    def __init__(self, catalog: Catalog, idle_timeout: float) -> None:
        self.catalog = catalog
        self.idle_timeout = idle_timeout
        self._lock = threading.RLock()
        self._sessions: dict[str, Session] = {}
        self._seq = 0
        self._ended: dict[str, str] = {}  # session key -> "closed" or "expired"
        self.on_close: list[Callable[[Session], None]] = []

    def login(self, username: str, password: str, agent: str = "") -> Session:
        """A new session for ``username``, or the session ``username`` names (joining by key)."""
        with self._lock:
            if username in self._ended and password == username:
                raise PermissionDenied(f"session {username} has been {self._ended[username]}")
            joined = self._sessions.get(username)
            if joined is not None and password == username:
                if not self.alive(joined):
                    raise PermissionDenied(f"session {username} has expired or been closed")
                joined.refcount += 1
                joined.last_access = time.time()
                return joined
            user = self.catalog.user_by_name(username)
            if user is None or user.password != password:
                raise PermissionDenied(f"wrong username or password for {username!r}")
            self._seq += 1
            session = Session(str(uuid.uuid4()), user, user.default_group_id, agent,
                              refcount=1, id=self._seq)
            self._sessions[session.uuid] = session
            return session

    def create_user_session(self, user: User, group_id: int, agent: str = "") -> Session:
        """A new session for an already signed-in user (ISession.createUserSession): it
        lives until it is closed or idles out, like the tokens omero-user-token makes."""
        with self._lock:
            self._seq += 1
            session = Session(str(uuid.uuid4()), user, group_id, agent, id=self._seq)
            self._sessions[session.uuid] = session
            return session

    def get(self, key: str) -> Session | None:
        with self._lock:
            return self._sessions.get(key)

    def alive(self, session: Session) -> bool:
        return not session.closed and time.time() - session.last_access <= self.idle_timeout

    def touch(self, session: Session) -> None:
        session.last_access = time.time()

    def release(self, session: Session, close: bool) -> int:
        """Drop one reference; close the session when none are left and ``close``."""
        with self._lock:
            session.refcount = max(0, session.refcount - 1)
            if close and session.refcount == 0:
                self.close(session)
            return session.refcount

    def close(self, session: Session, reason: str = "closed") -> None:
        with self._lock:
            if session.closed:
                return
            session.closed = True
            self._sessions.pop(session.uuid, None)
            self._ended[session.uuid] = reason
        for callback in list(self.on_close):
            callback(session)

    def expire_idle(self) -> list[Session]:
        """Close every session idle for longer than the timeout; return them."""
        with self._lock:
            stale = [s for s in self._sessions.values() if not self.alive(s)]
        for session in stale:
            self.close(session, "expired")
        return stale

    def open_count(self) -> int:
        with self._lock:
            return len(self._sessions)
