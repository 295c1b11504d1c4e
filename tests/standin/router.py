"""A Glacier2 router servant that logs clients in to the stand-in itself.

omero-py sets ``Ice.Default.Router`` to ``OMERO.Glacier2/router`` on the
server's port and sends every call through it. ``getClientProxy`` returns
a proxy on the stand-in's own adapter, so routed calls arrive there and are
dispatched by identity like direct calls. Each ``createSession`` makes a
ServiceFactory for that client (keyed by the ``omero.client.uuid`` it sends
in every call's context); ``destroySession`` or the client's connection
closing destroys it, as Glacier2 does.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import Glacier2
import Ice
import omero
import omero.api
import omero.constants

from tests.standin.catalog import PermissionDenied
from tests.standin.fallback import answers_unimplemented

if TYPE_CHECKING:
    from tests.standin.factory import ServiceFactoryI
    from tests.standin.server import StandinServer

LOG = logging.getLogger("omero_standin.router")
ROUTER_IDENTITY = Ice.Identity("router", "OMERO.Glacier2")


class _ConnectionWatch(Ice.ConnectionCallback):
    """Destroys a client's ServiceFactory when its connection closes."""

    def __init__(self, router: RouterI, client_uuid: str) -> None:
        self.router = router
        self.client_uuid = client_uuid

    def heartbeat(self, con: Any) -> None:
        pass

    def closed(self, con: Any) -> None:
        self.router.drop(self.client_uuid)


@answers_unimplemented
class RouterI(Glacier2.Router):
    """Glacier2.Router: createSession, destroySession and the routing calls Ice makes."""

    def __init__(self, server: StandinServer) -> None:
        self.server = server
        self._lock = threading.Lock()
        self._factories: dict[str, ServiceFactoryI] = {}

    # Ice.Router ----------------------------------------------------------

    def getClientProxy(self, current: Any = None) -> Any:  # noqa: N802
        return current.adapter.createProxy(Ice.Identity("client", "OMERO.Glacier2"))

    def getServerProxy(self, current: Any = None) -> Any:  # noqa: N802
        return current.adapter.createProxy(Ice.Identity("server", "OMERO.Glacier2"))

    def addProxies(self, proxies: list[Any], current: Any = None) -> list[Any]:  # noqa: N802
        return []

    # Glacier2.Router -----------------------------------------------------

    def getCategoryForClient(self, current: Any = None) -> str:  # noqa: N802
        return _client_uuid(current) or "standin"

    def getSessionTimeout(self, current: Any = None) -> int:  # noqa: N802
        return int(self.server.sessions.idle_timeout)

    def getACMTimeout(self, current: Any = None) -> int:  # noqa: N802
        return 0

    def createSession_async(self, cb: Any, user: str, password: str,  # noqa: N802
                            current: Any = None) -> None:
        try:
            cb.ice_response(self._create(user, password, current))
        except Glacier2.PermissionDeniedException as exc:
            cb.ice_exception(exc)
        except Exception as exc:  # noqa: BLE001
            LOG.exception("createSession failed")
            cb.ice_exception(Glacier2.CannotCreateSessionException(f"{type(exc).__name__}: {exc}"))

    def _create(self, user: str, password: str, current: Any) -> Any:
        from tests.standin.factory import ServiceFactoryI

        client_uuid = _client_uuid(current)
        if not client_uuid:
            raise Glacier2.CannotCreateSessionException(
                "no omero.client.uuid in the call context; use omero.client")
        try:
            session = self.server.sessions.login(user, password,
                                                 current.ctx.get(omero.constants.AGENT, ""))
        except PermissionDenied as exc:
            raise Glacier2.PermissionDeniedException(str(exc)) from exc
        sf = ServiceFactoryI(self.server, session, client_uuid, current.adapter)
        with self._lock:
            old = self._factories.pop(client_uuid, None)
            self._factories[client_uuid] = sf
        if old is not None:
            old.destroy()
        current.adapter.add(sf, sf.identity)
        if current.con is not None:
            current.con.setCallback(_ConnectionWatch(self, client_uuid))
        return omero.api.ServiceFactoryPrx.uncheckedCast(current.adapter.createProxy(sf.identity))

    def refreshSession_async(self, cb: Any, current: Any = None) -> None:  # noqa: N802
        sf = self._factories.get(_client_uuid(current))
        if sf is None:
            cb.ice_exception(Glacier2.SessionNotExistException())
            return
        self.server.sessions.touch(sf.session)
        cb.ice_response()

    def destroySession(self, current: Any = None) -> None:  # noqa: N802
        if not self.drop(_client_uuid(current)):
            raise Glacier2.SessionNotExistException()

    def drop(self, client_uuid: str | None) -> bool:
        """Destroy the ServiceFactory of ``client_uuid``; False if it has none."""
        with self._lock:
            sf = self._factories.pop(client_uuid, None) if client_uuid else None
        if sf is None:
            return False
        sf.destroy()
        return True

    def drop_session(self, session_uuid: str) -> None:
        """Destroy every ServiceFactory on a session (it was closed or expired)."""
        with self._lock:
            doomed = [k for k, sf in self._factories.items() if sf.session.uuid == session_uuid]
            factories = [self._factories.pop(k) for k in doomed]
        for sf in factories:
            sf.destroy(close_session=False)


def _client_uuid(current: Any) -> str | None:
    ctx = getattr(current, "ctx", None) or {}
    return ctx.get(omero.constants.CLIENTUUID)
