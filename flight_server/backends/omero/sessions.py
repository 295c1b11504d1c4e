"""One OMERO session per sign-in: create or join, map to a bearer token, keep alive, expire.

A sign-in with a user name and password creates a new OMERO session for that
user (``omero.client(host, port).createSession``); the reserved user name
``__session__`` joins the OMERO session whose key is the password
(``joinSession``). Either way the bridge keeps its own :class:`OmeroSession`
under a random *handle*; the bearer token names that handle, never a user,
so a token reaches exactly the session it was issued for.

A background thread pings OMERO (``keepAlive``) for sessions used within the
idle timeout and closes those idle for longer. A session with a stream or an
upload in progress (``OmeroSession.hold``) is not idle, however long it goes
without an OMERO call (a slow client, direct reads from disk), up to
``HELD_IDLE_FACTOR`` idle timeouts without any progress at all. A session
OMERO itself ended is dropped the first time a call notices (see
``errors.SessionGone``).
Joined sessions are detached, not closed, when the bridge lets go of them:
they belong to whoever created them.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import omero
import omero.clients  # noqa: F401 - registers the model and rtypes factories

from flight_server.backends.base import Caller
from flight_server.backends.omero.errors import omero_errors
from flight_server.errors import Unauthenticated

log = logging.getLogger(__name__)

_HOLD_LOCK = threading.Lock()

SESSION_USER = "__session__"
HANDLE_PREFIX = "omero-session:"
DEFAULT_IDLE_TIMEOUT = 600.0
#: A session held by a stream or upload that has not moved for this many idle timeouts is
#: closed all the same: its holder was lost without being closed (a stream never started).
HELD_IDLE_FACTOR = 12
AGENT = "omero-flight"
#: Seconds any one OMERO call may take before the bridge abandons it (Ice invocation timeout).
DEFAULT_CALL_TIMEOUT = 600.0
#: OMERO's own default for Ice.MessageSizeMax, in bytes (omero.constants.MESSAGESIZEMAX KiB).
DEFAULT_MESSAGE_SIZE_MAX = 250_000 * 1024

ClientFactory = Callable[[str, int], Any]


def _client(host: str, port: int) -> Any:
    client = omero.client(host, port)
    client.setAgent(AGENT)
    return client


def with_call_timeout(factory: ClientFactory, seconds: float) -> ClientFactory:
    """A client factory whose clients give every Ice call at most ``seconds`` to answer.

    ``Ice.Default.InvocationTimeout`` on the client's communicator applies to every
    proxy it makes or receives (the ServiceFactory, each service, each table), so a
    frozen OMERO call fails with ``Ice.InvocationTimeoutException`` instead of holding
    its call-gate slot for ever. The property must be set before the communicator
    exists, so it goes in as a property map when the factory is omero-py's own.
    """
    millis = str(max(1, int(seconds * 1000)))
    if factory is _client:
        def timed(host: str, port: int) -> Any:
            client = omero.client(host=host, port=port,
                                  pmap={"Ice.Default.InvocationTimeout": millis})
            client.setAgent(AGENT)
            return client
        return timed
    return factory


def message_size_max(client: Any) -> int:
    """The Ice message limit, in bytes, this client was set up with (OMERO's default if unset).

    OMERO servers and omero-py clients use the same value (``omero.constants.MESSAGESIZEMAX``)
    unless an administrator changed it; a call larger than the server's limit makes the
    server drop the connection, and with it the user's session.
    """
    try:
        value = client.getProperty("Ice.MessageSizeMax")
        kib = int(value) if value else 0
    except Exception:  # noqa: BLE001 - a client without properties: OMERO's default
        kib = 0
    return kib * 1024 if kib > 0 else DEFAULT_MESSAGE_SIZE_MAX


@dataclass
class OmeroSession:
    """A signed-in user's OMERO session, as the bridge holds it."""

    handle: str
    client: Any = field(repr=False)
    sf: Any = field(repr=False)  # the ServiceFactory proxy
    user_id: int
    username: str
    group_id: int
    group_ids: tuple[int, ...]
    is_admin: bool
    joined: bool
    last_used: float = field(default_factory=time.monotonic)
    closed: bool = False
    group_name: str = ""
    in_use: int = 0  # streams and uploads in progress (see ``hold``)
    session_keys: tuple[str, ...] = field(default=(), repr=False)  # never echoed in errors
    #: Service proxies asked of OMERO once (see ``query_service``).
    _services: dict[str, Any] = field(default_factory=dict, repr=False)

    def query_service(self) -> Any:
        """The session's ``IQuery`` proxy (``getQueryService``), asked of OMERO once.

        OMERO keeps one servant of each such service per session, so the proxy stays valid
        for the session's life; asking again is a round trip each time (omero-py's
        BlitzGateway keeps them too). Call it inside ``CallGate.call``.
        """
        return self._service("getQueryService")

    def shared_resources(self) -> Any:
        """The session's ``SharedResources`` proxy (OMERO.tables' ``openTable``), asked once."""
        return self._service("sharedResources")

    def _service(self, getter: str) -> Any:
        proxy = self._services.get(getter)
        if proxy is None:  # two threads may both ask: the same servant either way
            proxy = self._services[getter] = getattr(self.sf, getter)()
        return proxy

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def hold(self) -> None:
        """A stream or upload starts: the session is in use until the matching ``release``."""
        with _HOLD_LOCK:
            self.in_use += 1
        self.touch()

    def release(self) -> None:
        with _HOLD_LOCK:
            self.in_use = max(0, self.in_use - 1)
        self.touch()

    def caller(self) -> Caller:
        return Caller(self.user_id, self.username, self.group_ids, self.is_admin, session=self)


class SessionManager:
    """The bridge's OMERO sessions, by handle; thread-safe."""

    def __init__(self, host: str, port: int, idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                 client_factory: ClientFactory = _client) -> None:
        self.host = host
        self.port = port
        self.idle_timeout = float(idle_timeout)
        self._factory = client_factory
        self._lock = threading.Lock()
        self._sessions: dict[str, OmeroSession] = {}
        #: Called with each session as it closes, before its OMERO session ends.
        self.on_close: list[Callable[[OmeroSession], None]] = []
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="omero-session-reaper",
                                        daemon=True)
        self._reaper.start()

    # -- signing in and out ----------------------------------------------------------

    def login(self, username: str, password: str) -> OmeroSession:
        """A new bridge session for ``username``/``password`` or for a session key."""
        if not username or not password:
            raise Unauthenticated("give a user name and password, or user '__session__' "
                                  "with an OMERO session key as the password")
        joined = username == SESSION_USER
        client = self.new_client()
        try:
            with omero_errors(f"signing in to OMERO at {self.host}:{self.port}", (password,)):
                if joined:
                    client.joinSession(password)
                else:
                    client.createSession(username, password)
                sf = client.getSession()
                context = sf.getAdminService().getEventContext()
        except BaseException:
            _destroy(client)
            raise
        others = tuple(g for g in context.memberOfGroups if g != context.groupId)
        session = OmeroSession(
            handle=HANDLE_PREFIX + secrets.token_urlsafe(24), client=client, sf=sf,
            user_id=int(context.userId), username=context.userName,
            group_id=int(context.groupId), group_ids=(int(context.groupId), *others),
            is_admin=bool(context.isAdmin), joined=joined,
            group_name=str(context.groupName or ""),
            session_keys=(password,) if joined else ())
        with self._lock:
            self._sessions[session.handle] = session
        log.info("OMERO session for %s %s", session.username,
                 "joined by key" if joined else "created")
        return session

    def new_client(self) -> Any:
        """A new, not yet signed-in omero.client for this OMERO server."""
        return self._factory(self.host, self.port)

    def get(self, handle: str) -> OmeroSession:
        """The live session a token's handle names, or :class:`Unauthenticated`."""
        with self._lock:
            session = self._sessions.get(handle)
        if session is None or session.closed:
            raise Unauthenticated("this sign-in has ended (logged out, idle for too long, or "
                                  "the OMERO session closed): sign in again")
        session.touch()
        return session

    def logout(self, handle: str) -> None:
        with self._lock:
            session = self._sessions.pop(handle, None)
        if session is not None:
            self._close(session, "logged out")

    def forget(self, session: OmeroSession, reason: str) -> None:
        """Drop a session OMERO has ended."""
        with self._lock:
            self._sessions.pop(session.handle, None)
        self._close(session, reason)

    def active(self) -> list[OmeroSession]:
        with self._lock:
            return list(self._sessions.values())

    def close(self) -> None:
        """Close every session and stop the reaper."""
        self._stop.set()
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            self._close(session, "bridge shutting down")

    # -- keep-alive and idle timeout --------------------------------------------------

    def _reap(self) -> None:
        interval = max(0.5, min(60.0, self.idle_timeout / 4))
        while not self._stop.wait(interval):
            self.sweep()

    def sweep(self, now: float | None = None) -> None:
        """Close idle sessions; ping OMERO for the ones in use."""
        now = time.monotonic() if now is None else now
        for session in self.active():
            idle = now - session.last_used
            if session.in_use and idle <= self.idle_timeout * HELD_IDLE_FACTOR:
                pass  # a stream or upload in progress: kept alive (pinged below)
            elif idle > self.idle_timeout:
                self.forget(session, f"idle for more than {self.idle_timeout:g} s")
                continue
            try:
                session.sf.keepAlive(None)
            except Exception as exc:  # noqa: BLE001 - any failure means the session is unusable
                self.forget(session, f"keep-alive failed ({type(exc).__name__})")

    def _close(self, session: OmeroSession, reason: str) -> None:
        for hook in self.on_close:
            try:
                hook(session)
            except Exception:  # noqa: BLE001 - the session closes regardless
                log.warning("a session close hook failed", exc_info=True)
        session.closed = True
        log.info("closing the OMERO session of %s: %s", session.username, reason)
        if session.joined:
            try:  # the session belongs to whoever created it: only let go of it
                session.sf.detachOnDestroy()
            except Exception:  # noqa: BLE001 - already gone is fine
                pass
        _destroy(session.client)


def _destroy(client: Any) -> None:
    try:
        client.closeSession()
    except Exception:  # noqa: BLE001 - closing what may already be closed
        log.debug("closing an OMERO client failed", exc_info=True)
