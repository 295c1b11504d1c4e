"""The per-login ServiceFactory servant and the services it hands out."""

from __future__ import annotations

import threading
import uuid
from typing import TYPE_CHECKING, Any

import Ice
import omero
import omero.api
from omero.rtypes import unwrap

from tests.standin.catalog import PermissionDenied
from tests.standin.dispatch import sync
from tests.standin.fallback import answers_unimplemented
from tests.standin.files import RawFileStoreI
from tests.standin.services import AdminI, ConfigI, QueryI, SessionServiceI, UpdateI
from tests.standin.sessions import Session
from tests.standin.tables import SharedResourcesI

if TYPE_CHECKING:
    from tests.standin.server import StandinServer

_STATELESS = {
    "admin": (AdminI, omero.api.IAdminPrx),
    "query": (QueryI, omero.api.IQueryPrx),
    "update": (UpdateI, omero.api.IUpdatePrx),
    "session": (SessionServiceI, omero.api.ISessionPrx),
    "config": (ConfigI, omero.api.IConfigPrx),
    "shared": (SharedResourcesI, omero.grid.SharedResourcesPrx),
}


@answers_unimplemented
class ServiceFactoryI(omero.api.ServiceFactory):
    """One client's view of a session: its user, security context and services."""

    def __init__(self, server: StandinServer, session: Session, client_uuid: str,
                 adapter: Any) -> None:
        self.server = server
        self.catalog = server.catalog
        self.sessions = server.sessions
        self.session = session
        self.client_uuid = client_uuid
        self.adapter = adapter
        self.identity = Ice.Identity(session.uuid, f"session-{client_uuid}")
        self.close_on_destroy = True
        self.destroyed = False
        self._lock = threading.RLock()
        self._services: dict[str, Any] = {}
        self._stateful: dict[str, Any] = {}  # identity string -> servant
        self.tables: dict[str, Any] = {}  # table uuid -> servant

    @property
    def user(self):  # noqa: ANN201 - tests.standin.catalog.User
        return self.session.user

    # Checks used by every service ----------------------------------------

    def check(self, current: Any = None) -> None:
        """Refuse calls on a destroyed factory or a closed or expired session."""
        if self.destroyed or self.session.closed:
            raise omero.RemovedSessionException(None, None,
                                                f"session {self.session.uuid} is closed")
        if not self.sessions.alive(self.session):
            raise omero.SessionTimeoutException(None, None,
                                                f"session {self.session.uuid} has expired")
        self.sessions.touch(self.session)

    def _ctx_group(self, current: Any) -> int | None:
        ctx = getattr(current, "ctx", None) or {}
        value = ctx.get("omero.group")
        return None if value in (None, "") else int(value)

    def read_group(self, current: Any) -> int:
        """Group a query is limited to: omero.group from the call context, else the session's."""
        group = self._ctx_group(current)
        return self.session.group_id if group is None else group

    def write_group(self, current: Any) -> int:
        """Group new objects go into; the user must be a member."""
        group = self._ctx_group(current)
        if group is None or group < 0:
            group = self.session.group_id
        if group not in self.catalog.groups:
            raise omero.ApiUsageException(None, None, f"no group {group}")
        if group not in self.user.group_ids and not self.user.is_admin:
            raise PermissionDenied(f"user {self.user.name} is not a member of group {group}")
        return group

    # Services --------------------------------------------------------------

    def _service(self, name: str, current: Any) -> Any:
        self.check(current)
        self.server.count_service(self.user.name, name)
        with self._lock:
            servant = self._services.get(name)
            if servant is None:
                cls, _ = _STATELESS[name]
                servant = cls(self)
                ident = Ice.Identity(f"{name}-{uuid.uuid4()}", self.identity.category)
                self.adapter.add(servant, ident)
                self._services[name] = (servant, ident)
            else:
                servant, ident = servant
        return _STATELESS[name][1].uncheckedCast(self.adapter.createProxy(ident))

    @sync
    def getAdminService(self, current: Any = None) -> Any:
        return self._service("admin", current)

    @sync
    def getQueryService(self, current: Any = None) -> Any:
        return self._service("query", current)

    @sync
    def getUpdateService(self, current: Any = None) -> Any:
        return self._service("update", current)

    @sync
    def getSessionService(self, current: Any = None) -> Any:
        return self._service("session", current)

    @sync
    def getConfigService(self, current: Any = None) -> Any:
        return self._service("config", current)

    @sync
    def sharedResources(self, current: Any = None) -> Any:
        return self._service("shared", current)

    @sync
    def createRawFileStore(self, current: Any = None) -> Any:
        self.check(current)
        servant = RawFileStoreI(self)
        ident = Ice.Identity(f"rawfile-{uuid.uuid4()}", self.identity.category)
        self.adapter.add(servant, ident)
        with self._lock:
            self._stateful[Ice.identityToString(ident)] = servant
        servant.identity = ident
        return omero.api.RawFileStorePrx.uncheckedCast(self.adapter.createProxy(ident))

    def forget_stateful(self, ident: Any) -> None:
        with self._lock:
            self._stateful.pop(Ice.identityToString(ident), None)
        try:
            self.adapter.remove(ident)
        except Ice.NotRegisteredException:
            pass

    # Session-level calls ---------------------------------------------------

    @sync
    def getSecurityContexts(self, current: Any = None) -> Any:
        self.check(current)
        return [self._service_group(g) for g in self.user.group_ids]

    def _service_group(self, group_id: int) -> Any:
        grp = omero.model.ExperimenterGroupI(group_id, True)
        grp.name = omero.rtypes.rstring(self.catalog.groups[group_id].name)
        return grp

    @sync
    def setSecurityContext(self, obj: Any, current: Any = None) -> Any:
        self.check(current)
        if not isinstance(obj, omero.model.ExperimenterGroup):
            raise omero.ApiUsageException(
                None, None, "OMERO stand-in only supports an ExperimenterGroup security context")
        group_id = unwrap(obj.id)
        if group_id not in self.user.group_ids and not self.user.is_admin:
            raise PermissionDenied(f"user {self.user.name} is not a member of group {group_id}")
        previous = self._service_group(self.session.group_id)
        self.session.group_id = group_id
        return previous

    @sync
    def setCallback(self, callback: Any, current: Any = None) -> None:
        self.check(current)

    @sync
    def subscribe(self, topic: str, prx: Any, current: Any = None) -> None:
        self.check(current)

    @sync
    def closeOnDestroy(self, current: Any = None) -> None:
        self.check(current)
        self.close_on_destroy = True

    @sync
    def detachOnDestroy(self, current: Any = None) -> None:
        self.check(current)
        self.close_on_destroy = False

    @sync
    def keepAlive(self, proxy: Any, current: Any = None) -> bool:
        self.check(current)
        return True

    @sync
    def keepAllAlive(self, proxies: list[Any], current: Any = None) -> int:
        self.check(current)
        return 0

    @sync
    def activeServices(self, current: Any = None) -> list[str]:
        self.check(current)
        with self._lock:
            return list(self._stateful)

    # Lifetime --------------------------------------------------------------

    def destroy(self, close_session: bool | None = None) -> None:
        """Close this client's tables and stateful services, drop its servants, release the
        session (closing it when no client is left, unless detachOnDestroy was called)."""
        with self._lock:
            if self.destroyed:
                return
            self.destroyed = True
            tables = list(self.tables.values())
            stateful = list(self._stateful.values())
            services = list(self._services.values())
        for table in tables:
            self.server.close_table(table)
        for servant in stateful:
            self.forget_stateful(servant.identity)
        for _, ident in services:
            try:
                self.adapter.remove(ident)
            except Ice.NotRegisteredException:
                pass
        try:
            self.adapter.remove(self.identity)
        except Ice.NotRegisteredException:
            pass
        close = self.close_on_destroy if close_session is None else close_session
        self.sessions.release(self.session, close=close)
