"""Stateless OMERO services of one ServiceFactory: IQuery, IUpdate, IAdmin, ISession, IConfig."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import omero
import omero.api
import omero.model
import omero.sys
from omero.rtypes import rbool, rlong, robject, rstring, rtime, unwrap

from tests.standin import hql
from tests.standin.catalog import PermissionDenied, Record, Ref
from tests.standin.dispatch import VOID, amd
from tests.standin.fallback import answers_unimplemented
from tests.standin.model import (
    ANNOTATION_LINKS,
    LINKS,
    REFERENCES,
    SAVABLE,
    fields_from_model,
    kind_of,
    to_model,
)

if TYPE_CHECKING:
    from tests.standin.factory import ServiceFactoryI


def _params(params: Any) -> dict[str, Any]:
    if params is None or params.map is None:
        return {}
    return {k: unwrap(v) for k, v in params.map.items()}


@answers_unimplemented
class QueryI(omero.api.IQuery):
    """IQuery over the catalog, with the caller's visibility."""

    def __init__(self, sf: ServiceFactoryI) -> None:
        self.sf = sf

    def _visible(self, kind: str, record_id: int, current: Any) -> Record | None:
        record = self.sf.catalog.get(kind, record_id)
        if record is None or not self.sf.catalog.can_read(self.sf.user, record,
                                                           self.sf.read_group(current)):
            return None
        return record

    @amd
    def get_async(self, klass: str, oid: int, current: Any = None) -> Any:
        self.sf.check(current)
        record = self._visible(kind_of(klass), oid, current)
        if record is None:
            raise omero.ValidationException(
                None, None, f"No row with the given identifier exists: {kind_of(klass)}:{oid}")
        return to_model(self.sf.catalog, record)

    @amd
    def find_async(self, klass: str, oid: int, current: Any = None) -> Any:
        self.sf.check(current)
        record = self._visible(kind_of(klass), oid, current)
        return None if record is None else to_model(self.sf.catalog, record)

    @amd
    def findAll_async(self, klass: str, flt: Any, current: Any = None) -> Any:
        self.sf.check(current)
        group = self.sf.read_group(current)
        records = [r for r in self.sf.catalog.of_kind(kind_of(klass))
                   if self.sf.catalog.can_read(self.sf.user, r, group)]
        return [to_model(self.sf.catalog, r) for r in sorted(records, key=lambda r: r.id)]

    def _run(self, query: str, params: Any, current: Any) -> list[list[Any]]:
        self.sf.check(current)
        parsed = hql.parse(query)
        group = self.sf.read_group(current)
        catalog = self.sf.catalog
        values = _params(params)
        flt = getattr(params, "theFilter", None)
        offset = (unwrap(flt.offset) or 0) if flt is not None else 0
        limit = unwrap(flt.limit) if flt is not None else None
        self.sf.server.record_query(self.sf.user.name, query, values, offset, limit)

        def visible(record: Record) -> bool:
            return catalog.can_read(self.sf.user, record, group)

        rows = hql.run(parsed, self._roots(parsed, values),
                       lambda rec, path: self._resolve(rec, path, group), values,
                       catalog.of_kind, visible)
        if offset or limit is not None:
            rows = rows[offset:None if limit is None else offset + limit]
        return rows

    def _roots(self, parsed: hql.Query, values: dict[str, Any]) -> list[Record]:
        """The records a query starts from: one, by primary key, for ``x.id = ...``."""
        for path, op, value in parsed.conditions:
            if path == f"{parsed.alias}.id" and op == "eq":
                if isinstance(value, str) and value.startswith(":"):
                    value = values.get(value[1:])
                record = self.sf.catalog.get(parsed.kind, value) \
                    if isinstance(value, int) else None
                return [record] if record is not None else []
        return self.sf.catalog.of_kind(parsed.kind)

    def _resolve(self, record: Record | None, path: list[str], group: int) -> Any:
        """Follow ``path`` from ``record``; hidden or missing objects resolve to None."""
        value: Any = record
        catalog = self.sf.catalog
        for i, name in enumerate(path):
            if value is None:
                return None
            if name == "id":
                return value.id
            if name == "details":
                rest = path[i + 1:]
                if rest[:1] == ["owner"]:
                    user = catalog.users[value.owner_id]
                    return {"id": user.id, "omeName": user.name}.get(rest[1] if len(rest) > 1
                                                                     else "id")
                if rest[:1] == ["group"]:
                    grp = catalog.groups[value.group_id]
                    return {"id": grp.id, "name": grp.name}.get(rest[1] if len(rest) > 1
                                                                else "id")
                raise hql.UnsupportedQuery(f"unsupported details path {'.'.join(path)}")
            if name not in value.fields and name not in REFERENCES.get(value.kind, ()) \
                    and name not in ("name", "description", "ns", "mimetype", "size", "hash",
                                     "path"):
                raise hql.UnsupportedQuery(f"{value.kind} has no field {name!r}")
            field = value.fields.get(name)
            if isinstance(field, Ref):
                target = catalog.get(field.kind, field.id)
                if target is None or not catalog.can_read(self.sf.user, target, group):
                    return None
                value = target
            else:
                if i != len(path) - 1:
                    return None
                return field
        return value

    def _to_wire(self, value: Any) -> Any:
        if isinstance(value, Record):
            return to_model(self.sf.catalog, value)
        return value

    @amd
    def findByQuery_async(self, query: str, params: Any, current: Any = None) -> Any:
        rows = [r[0] for r in self._run(query, params, current) if r[0] is not None]
        if len(rows) > 1:
            raise omero.ValidationException(
                None, None, f"findByQuery returned {len(rows)} results for {query!r}")
        return self._to_wire(rows[0]) if rows else None

    @amd
    def findAllByQuery_async(self, query: str, params: Any, current: Any = None) -> Any:
        rows = [r[0] for r in self._run(query, params, current) if r[0] is not None]
        return [self._to_wire(r) for r in rows]

    @amd
    def projection_async(self, query: str, params: Any, current: Any = None) -> Any:
        return [[_rtype(self._to_wire(v)) for v in row] for row in self._run(query, params,
                                                                               current)]


def _rtype(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        return rbool(value)
    if isinstance(value, int):
        return rlong(value)
    if isinstance(value, str):
        return rstring(value)
    return robject(value)


@answers_unimplemented
class UpdateI(omero.api.IUpdate):
    """IUpdate for containers, OriginalFiles, FileAnnotations and their links."""

    def __init__(self, sf: ServiceFactoryI) -> None:
        self.sf = sf

    def save(self, obj: Any, current: Any) -> Record:
        """Create or update ``obj`` (and new objects it refers to); return its record."""
        catalog = self.sf.catalog
        user = self.sf.user
        kind = kind_of(obj)
        if kind not in SAVABLE:
            raise omero.ApiUsageException(
                None, None, f"OMERO stand-in cannot save {kind} objects (supported: "
                f"{', '.join(SAVABLE)})")
        with catalog.lock:
            if obj.id is not None:
                record = catalog.get(kind, unwrap(obj.id))
                if record is None or not catalog.can_read(user, record):
                    raise omero.ValidationException(None, None, f"no {kind}:{unwrap(obj.id)}")
                if not obj.isLoaded():
                    return record
                catalog.check_write(user, record)
                record.fields.update(self._fields(kind, obj, current))
                return record
            fields = self._fields(kind, obj, current)
            group_id = self.sf.write_group(current)
            if kind in LINKS:
                parent = catalog.get(fields["parent"].kind, fields["parent"].id)
                if kind in ANNOTATION_LINKS:
                    allowed = catalog.can_annotate(user, parent)
                else:
                    allowed = catalog.can_write(user, parent)
                if not allowed:
                    raise PermissionDenied(
                        f"user {user.name} cannot link to {parent.kind}:{parent.id} owned by "
                        f"{catalog.users[parent.owner_id].name} in group "
                        f"{catalog.groups[parent.group_id].name}")
                if parent.group_id != group_id:
                    raise omero.GroupSecurityViolation(
                        None, None, f"{parent.kind}:{parent.id} is in group {parent.group_id}, "
                        f"the link would be in group {group_id}")
            return catalog.add(kind, user.id, group_id, **fields)

    def _fields(self, kind: str, obj: Any, current: Any) -> dict[str, Any]:
        """Fields of ``obj``; referenced objects must exist and be readable (new ones are saved)."""
        catalog = self.sf.catalog
        for name in REFERENCES.get(kind, {}):
            target = getattr(obj, f"_{name}", None)
            if target is not None and target.id is None and target.isLoaded():
                saved = self.save(target, current)
                target.setId(rlong(saved.id))
        fields = fields_from_model(kind, obj)
        for name, ref in fields.items():
            if isinstance(ref, Ref):
                target = catalog.get(ref.kind, ref.id)
                if target is None or not catalog.can_read(self.sf.user, target):
                    raise omero.ValidationException(
                        None, None, f"{kind}.{name} refers to {ref.kind}:{ref.id}, which does "
                        "not exist or cannot be read")
        return fields

    @amd
    def saveAndReturnObject_async(self, obj: Any, current: Any = None) -> Any:
        self.sf.check(current)
        return to_model(self.sf.catalog, self.save(obj, current))

    @amd
    def saveObject_async(self, obj: Any, current: Any = None) -> Any:
        self.sf.check(current)
        self.save(obj, current)
        return VOID

    @amd
    def saveArray_async(self, graph: list[Any], current: Any = None) -> Any:
        self.sf.check(current)
        for obj in graph:
            self.save(obj, current)
        return VOID

    @amd
    def saveCollection_async(self, objs: list[Any], current: Any = None) -> Any:
        self.sf.check(current)
        for obj in objs:
            self.save(obj, current)
        return VOID

    @amd
    def saveAndReturnArray_async(self, graph: list[Any], current: Any = None) -> Any:
        self.sf.check(current)
        return [to_model(self.sf.catalog, self.save(o, current)) for o in graph]

    @amd
    def saveAndReturnIds_async(self, graph: list[Any], current: Any = None) -> Any:
        self.sf.check(current)
        return [self.save(o, current).id for o in graph]

    @amd
    def deleteObject_async(self, row: Any, current: Any = None) -> Any:
        self.sf.check(current)
        catalog = self.sf.catalog
        record = catalog.get(kind_of(row), unwrap(row.id))
        if record is None:
            raise omero.ValidationException(None, None, f"no {kind_of(row)}:{unwrap(row.id)}")
        catalog.check_write(self.sf.user, record)
        if record.kind == "OriginalFile":
            self.sf.server.delete_file(record)  # its bytes, annotations and links too
        else:
            catalog.delete(record.kind, record.id)
        return VOID


@answers_unimplemented
class AdminI(omero.api.IAdmin):
    """IAdmin: the caller's event context, permission checks, users and groups."""

    def __init__(self, sf: ServiceFactoryI) -> None:
        self.sf = sf

    @amd
    def getEventContext_async(self, current: Any = None) -> Any:
        self.sf.check(current)
        session, user = self.sf.session, self.sf.user
        group = self.sf.catalog.groups[self.sf.session.group_id]
        return omero.sys.EventContext(
            shareId=-1, sessionId=session.id, sessionUuid=session.uuid, userId=user.id,
            userName=user.name, groupId=group.id, groupName=group.name, isAdmin=user.is_admin,
            adminPrivileges=[], eventId=-1, eventType="User", memberOfGroups=list(user.group_ids),
            leaderOfGroups=[], groupPermissions=omero.model.PermissionsI(group.permissions))

    @amd
    def canUpdate_async(self, obj: Any, current: Any = None) -> Any:
        self.sf.check(current)
        record = self.sf.catalog.get(kind_of(obj), unwrap(obj.id))
        return record is not None and self.sf.catalog.can_write(self.sf.user, record)

    def _experimenter(self, user_id: int) -> Any:
        user = self.sf.catalog.users[user_id]
        exp = omero.model.ExperimenterI(user.id, True)
        exp.omeName = rstring(user.name)
        exp.firstName = rstring(user.first_name or user.name)
        exp.lastName = rstring(user.last_name or user.name)
        return exp

    def _group(self, group_id: int) -> Any:
        group = self.sf.catalog.groups[group_id]
        grp = omero.model.ExperimenterGroupI(group.id, True)
        grp.name = rstring(group.name)
        grp.details.permissions = omero.model.PermissionsI(group.permissions)
        return grp

    @amd
    def getExperimenter_async(self, uid: int, current: Any = None) -> Any:
        self.sf.check(current)
        if uid not in self.sf.catalog.users:
            raise omero.ApiUsageException(None, None, f"no experimenter {uid}")
        return self._experimenter(uid)

    @amd
    def lookupExperimenter_async(self, name: str, current: Any = None) -> Any:
        self.sf.check(current)
        user = self.sf.catalog.user_by_name(name)
        if user is None:
            raise omero.ApiUsageException(None, None, f"no experimenter named {name!r}")
        return self._experimenter(user.id)

    @amd
    def getGroup_async(self, gid: int, current: Any = None) -> Any:
        self.sf.check(current)
        if gid not in self.sf.catalog.groups:
            raise omero.ApiUsageException(None, None, f"no group {gid}")
        return self._group(gid)

    @amd
    def lookupGroup_async(self, name: str, current: Any = None) -> Any:
        self.sf.check(current)
        group = self.sf.catalog.group_by_name(name)
        if group is None:
            raise omero.ApiUsageException(None, None, f"no group named {name!r}")
        return self._group(group.id)

    @amd
    def getMemberOfGroupIds_async(self, exp: Any, current: Any = None) -> Any:
        self.sf.check(current)
        user = self.sf.user if exp is None else self.sf.catalog.users[unwrap(exp.id)]
        return list(user.group_ids)

    @amd
    def getDefaultGroup_async(self, uid: int, current: Any = None) -> Any:
        self.sf.check(current)
        return self._group(self.sf.catalog.users[uid].default_group_id)

    @amd
    def getSecurityRoles_async(self, current: Any = None) -> Any:
        self.sf.check(current)
        return omero.sys.Roles(rootId=0, rootName="root", systemGroupId=0,
                               systemGroupName="system", userGroupId=1, userGroupName="user",
                               guestId=1, guestName="guest", guestGroupId=2,
                               guestGroupName="guest")

    def _require_admin(self) -> None:
        if not self.sf.user.is_admin:
            raise PermissionDenied(f"user {self.sf.user.name} is not an administrator")

    @amd
    def createGroup_async(self, group: Any, current: Any = None) -> Any:
        self.sf.check(current)
        self._require_admin()
        perms = group.details.permissions
        perm_text = str(perms) if perms is not None else "rw----"
        try:
            created = self.sf.catalog.add_group(unwrap(group.name), perm_text)
        except ValueError as exc:
            raise omero.ValidationException(None, None, str(exc)) from exc
        return created.id

    @amd
    def createExperimenterWithPassword_async(self, user: Any, password: Any, default_group: Any,
                                             groups: list[Any], current: Any = None) -> Any:
        self.sf.check(current)
        self._require_admin()
        group_ids = [unwrap(g.id) for g in groups or []]
        try:
            created = self.sf.catalog.add_user(
                unwrap(user.omeName), unwrap(password) or "", group_ids,
                unwrap(default_group.id), first_name=unwrap(user.firstName) or "",
                last_name=unwrap(user.lastName) or "")
        except ValueError as exc:
            raise omero.ValidationException(None, None, str(exc)) from exc
        return created.id


@answers_unimplemented
class SessionServiceI(omero.api.ISession):
    """ISession: look up and close sessions."""

    def __init__(self, sf: ServiceFactoryI) -> None:
        self.sf = sf

    def _model(self, key: str) -> Any:
        session = self.sf.sessions.get(key)
        if session is None or not self.sf.sessions.alive(session):
            raise omero.RemovedSessionException(None, None, f"session {key} is closed")
        model = omero.model.SessionI(session.id, True)
        model.uuid = rstring(session.uuid)
        model.started = rtime(int(session.started * 1000))
        model.timeToIdle = rlong(int(self.sf.sessions.idle_timeout * 1000))
        model.timeToLive = rlong(0)
        model.userAgent = rstring(session.agent)
        model.owner = omero.model.ExperimenterI(session.user.id, False)
        return model

    @amd
    def getSession_async(self, key: str, current: Any = None) -> Any:
        self.sf.check(current)
        return self._model(key)

    @amd
    def createUserSession_async(self, time_to_live: int, time_to_idle: int, group_name: str,
                                current: Any = None) -> Any:
        """A new session for the caller in ``group_name`` (the stand-in's idle timeout applies)."""
        self.sf.check(current)
        user = self.sf.user
        group = self.sf.catalog.group_by_name(group_name) if group_name else None
        group_id = user.group_ids[0] if group is None else group.id
        if group_id not in user.group_ids:
            raise omero.SecurityViolation(None, None,
                                          f"{user.name} is not a member of group {group_name}")
        return self._model(self.sf.sessions.create_user_session(user, group_id, "user session")
                           .uuid)

    @amd
    def getReferenceCount_async(self, key: str, current: Any = None) -> Any:
        self.sf.check(current)
        session = self.sf.sessions.get(key)
        return 0 if session is None else session.refcount

    @amd
    def closeSession_async(self, sess: Any, current: Any = None) -> Any:
        key = unwrap(sess.uuid)
        session = self.sf.sessions.get(key)
        if session is None:
            raise omero.RemovedSessionException(None, None, f"session {key} is closed")
        if session.user.id != self.sf.user.id and not self.sf.user.is_admin:
            raise PermissionDenied(f"user {self.sf.user.name} cannot close session {key}")
        return self.sf.sessions.release(session, close=True)


@answers_unimplemented
class ConfigI(omero.api.IConfig):
    """IConfig: version and a few read-only values."""

    def __init__(self, sf: ServiceFactoryI) -> None:
        self.sf = sf

    @amd
    def getVersion_async(self, current: Any = None) -> Any:
        return "5.6.0-standin"

    @amd
    def getConfigValue_async(self, key: str, current: Any = None) -> Any:
        self.sf.check(current)
        return self.sf.server.config.get(key, "")

    @amd
    def getClientConfigValues_async(self, current: Any = None) -> Any:
        return {}

    @amd
    def getDatabaseUuid_async(self, current: Any = None) -> Any:
        return self.sf.server.database_uuid
