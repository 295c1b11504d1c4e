"""The stand-in's object store: users, groups, objects and OMERO's permission rules.

Everything lives in plain dicts guarded by one re-entrant lock, so Ice's
server threads can call in concurrently. Objects are ``Record``s: a kind
("Image", "FileAnnotation", "ImageAnnotationLink", ...), an id from a
per-kind sequence (as OMERO's tables have), an owner, a group and fields.
References to other objects are stored as ``Ref(kind, id)``.

Permission rules (OMERO group permission strings, owner / group / world):

- ``rw----`` private: only the owner (and admins) read or write.
- ``rwr---`` read-only: group members read; only the owner writes or links.
- ``rwra--`` read-annotate: members also link annotations to others' objects.
- ``rwrw--`` read-write: members also edit others' objects.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

PRIVATE = "rw----"
READ_ONLY = "rwr---"
READ_ANNOTATE = "rwra--"
READ_WRITE = "rwrw--"
GROUP_PERMISSIONS = (PRIVATE, READ_ONLY, READ_ANNOTATE, READ_WRITE)

SYSTEM_GROUP_ID = 0
USER_GROUP_ID = 1
ROOT_USER_ID = 0


class Ref(NamedTuple):
    """A reference to another record."""

    kind: str
    id: int


@dataclass
class Group:
    id: int
    name: str
    permissions: str


@dataclass
class User:
    id: int
    name: str
    password: str
    group_ids: list[int]
    default_group_id: int
    first_name: str = ""
    last_name: str = ""

    @property
    def is_admin(self) -> bool:
        return SYSTEM_GROUP_ID in self.group_ids


@dataclass
class Record:
    kind: str
    id: int
    owner_id: int
    group_id: int
    fields: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)


class PermissionDenied(Exception):
    """A user may not do this to a record; servants turn it into omero.SecurityViolation."""


class Catalog:
    """Thread-safe store of users, groups and records, with OMERO's visibility rules."""

    def __init__(self, root_password: str) -> None:
        self.lock = threading.RLock()
        self.groups: dict[int, Group] = {}
        self.users: dict[int, User] = {}
        self.records: dict[tuple[str, int], Record] = {}
        self._by_kind: dict[str, dict[int, Record]] = {}  # the same records, per kind
        self._sequences: dict[str, int] = {}
        self._group_seq = 2
        self._user_seq = 1
        self.groups[SYSTEM_GROUP_ID] = Group(SYSTEM_GROUP_ID, "system", PRIVATE)
        self.groups[USER_GROUP_ID] = Group(USER_GROUP_ID, "user", PRIVATE)
        self.groups[2] = Group(2, "guest", PRIVATE)
        self.users[ROOT_USER_ID] = User(
            ROOT_USER_ID, "root", root_password, [SYSTEM_GROUP_ID, USER_GROUP_ID], SYSTEM_GROUP_ID
        )

    # Users and groups ---------------------------------------------------

    def add_group(self, name: str, permissions: str) -> Group:
        if permissions not in GROUP_PERMISSIONS:
            raise ValueError(f"unsupported group permissions {permissions!r}")
        with self.lock:
            if any(g.name == name for g in self.groups.values()):
                raise ValueError(f"group {name!r} already exists")
            self._group_seq += 1
            group = Group(self._group_seq, name, permissions)
            self.groups[group.id] = group
            return group

    def add_user(
        self, name: str, password: str, group_ids: list[int], default_group_id: int, **names: str
    ) -> User:
        with self.lock:
            if self.user_by_name(name) is not None:
                raise ValueError(f"user {name!r} already exists")
            for gid in group_ids:
                if gid not in self.groups:
                    raise ValueError(f"no group with id {gid}")
            ids = list(dict.fromkeys([default_group_id, *group_ids, USER_GROUP_ID]))
            self._user_seq += 1
            user = User(self._user_seq, name, password, ids, default_group_id, **names)
            self.users[user.id] = user
            return user

    def user_by_name(self, name: str) -> User | None:
        with self.lock:
            return next((u for u in self.users.values() if u.name == name), None)

    def group_by_name(self, name: str) -> Group | None:
        with self.lock:
            return next((g for g in self.groups.values() if g.name == name), None)

    # Records ------------------------------------------------------------

    def add(self, kind: str, owner_id: int, group_id: int, **fields: Any) -> Record:
        with self.lock:
            next_id = self._sequences.get(kind, 0) + 1
            self._sequences[kind] = next_id
            record = Record(kind, next_id, owner_id, group_id, dict(fields))
            self.records[(kind, next_id)] = record
            self._by_kind.setdefault(kind, {})[next_id] = record
            return record

    def get(self, kind: str, record_id: int) -> Record | None:
        with self.lock:
            return self.records.get((kind, record_id))

    def delete(self, kind: str, record_id: int) -> None:
        with self.lock:
            self.records.pop((kind, record_id), None)
            self._by_kind.get(kind, {}).pop(record_id, None)

    def of_kind(self, kind: str) -> list[Record]:
        with self.lock:
            return list(self._by_kind.get(kind, {}).values())

    # Permissions --------------------------------------------------------

    def can_read(self, user: User, record: Record, group_ctx: int = -1) -> bool:
        """Whether ``user`` sees ``record`` when querying in ``group_ctx`` (-1: all groups)."""
        if group_ctx >= 0 and record.group_id != group_ctx:
            return False
        if user.is_admin or record.owner_id == user.id:
            return True
        if record.group_id not in user.group_ids:
            return False
        return self.groups[record.group_id].permissions[2] == "r"

    def can_annotate(self, user: User, record: Record) -> bool:
        """Whether ``user`` may link annotations to ``record``."""
        if user.is_admin or record.owner_id == user.id:
            return True
        if record.group_id not in user.group_ids:
            return False
        return self.groups[record.group_id].permissions[3] in ("a", "w")

    def can_write(self, user: User, record: Record) -> bool:
        """Whether ``user`` may change or delete ``record``."""
        if user.is_admin or record.owner_id == user.id:
            return True
        if record.group_id not in user.group_ids:
            return False
        return self.groups[record.group_id].permissions[3] == "w"

    def check_write(self, user: User, record: Record) -> None:
        if not self.can_write(user, record):
            raise PermissionDenied(
                f"user {user.name} cannot write {record.kind}:{record.id} owned by "
                f"{self.users[record.owner_id].name} in group "
                f"{self.groups[record.group_id].name} ({self.groups[record.group_id].permissions})"
            )

    def check_read(self, user: User, record: Record) -> None:
        if not self.can_read(user, record):
            raise PermissionDenied(f"user {user.name} cannot read {record.kind}:{record.id}")
