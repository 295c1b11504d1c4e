"""Seeding a running stand-in through the real OMERO API (works against a real OMERO too).

Groups and users are created as root with IAdmin; images, containers, links,
files and tables are created as their owner with IUpdate, RawFileStore and
the OMERO.tables API, exactly as clients do::

    seed = Seeder("127.0.0.1", port, root_password="omero")
    lab = seed.group("lab", "rwr---")
    seed.user("alice", "pw-alice", groups=["lab"])
    image = seed.image("alice", "lab", "cells")
    table = seed.table("alice", "lab", df, "measurements", links=[("Image", image)])
    table.annotation_id, table.file_id
"""

from __future__ import annotations

import gzip as gzip_module
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import omero
import omero.grid
import omero.model
import omero.ObjectFactoryRegistrar  # noqa: F401 - defines the omero.model.*I classes
import omero_Tables_ice  # noqa: F401 - defines omero.grid.*Column
from omero.rtypes import rint, rstring

Link = tuple[str, int]


@dataclass(frozen=True)
class SeededFile:
    """A file or table attached with a FileAnnotation."""

    annotation_id: int
    file_id: int
    name: str


class Seeder:
    """Create users, groups, objects, files and tables on an OMERO (or the stand-in)."""

    def __init__(self, host: str, port: int, root_password: str) -> None:
        self.host = host
        self.port = port
        self.passwords: dict[str, str] = {"root": root_password}
        self.group_ids: dict[str, int] = {"system": 0, "user": 1}
        self.user_ids: dict[str, int] = {"root": 0}
        self._clients: dict[str, Any] = {}

    # Connections ---------------------------------------------------------

    def client(self, user: str) -> Any:
        """A logged-in omero.client for ``user`` (kept open until close())."""
        if user not in self._clients:
            client = omero.client(self.host, self.port)
            client.createSession(user, self.passwords[user])
            self._clients[user] = client
        return self._clients[user]

    def close(self) -> None:
        import Ice

        for client in self._clients.values():
            try:
                client.closeSession()
            except Ice.UserException as exc:
                # By name: Glacier2's generated classes can exist twice in one process
                # (depending on import order), so the class imported here may not be the
                # one raised.
                if type(exc).__qualname__ != "SessionNotExistException":
                    raise  # only a session that expired already is not an error
        self._clients.clear()

    def _ctx(self, group: str | int) -> dict[str, str]:
        gid = group if isinstance(group, int) else self.group_ids[group]
        return {"omero.group": str(gid)}

    # Users and groups ----------------------------------------------------

    def group(self, name: str, permissions: str = "rw----") -> int:
        """Create a group with OMERO permissions ``rw----``, ``rwr---``, ``rwra--``, ``rwrw--``."""
        group = omero.model.ExperimenterGroupI()
        group.name = rstring(name)
        group.ldap = omero.rtypes.rbool(False)
        group.details.permissions = omero.model.PermissionsI(permissions)
        gid = self.client("root").sf.getAdminService().createGroup(group)
        self.group_ids[name] = gid
        return gid

    def user(self, name: str, password: str, groups: Iterable[str],
             default_group: str | None = None) -> int:
        """Create a user in ``groups`` (the first is the default unless ``default_group``)."""
        groups = list(groups)
        exp = omero.model.ExperimenterI()
        exp.omeName = rstring(name)
        exp.firstName = rstring(name.capitalize())
        exp.lastName = rstring("Tester")
        exp.ldap = omero.rtypes.rbool(False)
        default = omero.model.ExperimenterGroupI(self.group_ids[default_group or groups[0]], False)
        others = [omero.model.ExperimenterGroupI(self.group_ids[g], False) for g in groups]
        uid = self.client("root").sf.getAdminService().createExperimenterWithPassword(
            exp, rstring(password), default, others)
        self.passwords[name] = password
        self.user_ids[name] = uid
        return uid

    # Objects -------------------------------------------------------------

    def save(self, owner: str, group: str | int, obj: Any) -> Any:
        """Save ``obj`` as ``owner`` in ``group``; return the saved object."""
        update = self.client(owner).sf.getUpdateService()
        return update.saveAndReturnObject(obj, self._ctx(group))

    def _named(self, kind: str, owner: str, group: str | int, name: str, **fields: Any) -> int:
        obj = getattr(omero.model, f"{kind}I")()
        obj.name = rstring(name)
        for key, value in fields.items():
            setattr(obj, key, value)
        return self.save(owner, group, obj).id.val

    def image(self, owner: str, group: str | int, name: str = "image") -> int:
        return self._named("Image", owner, group, name)

    def dataset(self, owner: str, group: str | int, name: str = "dataset") -> int:
        return self._named("Dataset", owner, group, name)

    def project(self, owner: str, group: str | int, name: str = "project") -> int:
        return self._named("Project", owner, group, name)

    def screen(self, owner: str, group: str | int, name: str = "screen") -> int:
        return self._named("Screen", owner, group, name)

    def plate(self, owner: str, group: str | int, name: str = "plate") -> int:
        return self._named("Plate", owner, group, name)

    def roi(self, owner: str, group: str | int, image_id: int, name: str = "roi") -> int:
        return self._named("Roi", owner, group, name,
                           image=omero.model.ImageI(image_id, False))

    def well(self, owner: str, group: str | int, plate_id: int, row: int = 0,
             column: int = 0) -> int:
        well = omero.model.WellI()
        well.plate = omero.model.PlateI(plate_id, False)
        well.row = rint(row)
        well.column = rint(column)
        return self.save(owner, group, well).id.val

    def link(self, owner: str, group: str | int, parent: Link, child: Link) -> int:
        """Link e.g. ("Dataset", 1) to ("Image", 2), or an object to a FileAnnotation."""
        parent_kind, parent_id = parent
        child_kind, child_id = child
        suffix = "Annotation" if child_kind.endswith("Annotation") else child_kind
        link = getattr(omero.model, f"{parent_kind}{suffix}LinkI")()
        link.link(getattr(omero.model, f"{parent_kind}I")(parent_id, False),
                  getattr(omero.model, f"{child_kind}I")(child_id, False))
        return self.save(owner, group, link).id.val

    # Files and tables ----------------------------------------------------

    def _annotate(self, owner: str, group: str | int, file_id: int, links: Iterable[Link],
                  name: str) -> SeededFile:
        annotation = omero.model.FileAnnotationI()
        annotation.file = omero.model.OriginalFileI(file_id, False)
        ann_id = self.save(owner, group, annotation).id.val
        for parent in links:
            self.link(owner, group, parent, ("FileAnnotation", ann_id))
        return SeededFile(ann_id, file_id, name)

    def file(self, owner: str, group: str | int, data: bytes, name: str, mimetype: str,
             links: Iterable[Link] = ()) -> SeededFile:
        """Upload bytes as an OriginalFile (RawFileStore) with a FileAnnotation and links."""
        ctx = self._ctx(group)
        sf = self.client(owner).sf
        ofile = omero.model.OriginalFileI()
        ofile.name = rstring(name)
        ofile.path = rstring("/seed/")
        ofile.mimetype = rstring(mimetype)
        ofile = sf.getUpdateService().saveAndReturnObject(ofile, ctx)
        store = sf.createRawFileStore(ctx)
        try:
            store.setFileId(ofile.id.val, ctx)
            for offset in range(0, len(data), 1 << 20):
                block = data[offset:offset + (1 << 20)]
                store.write(block, offset, len(block), ctx)
            store.save(ctx)
        finally:
            store.close(ctx)
        return self._annotate(owner, group, ofile.id.val, links, name)

    def csv(self, owner: str, group: str | int, frame: Any, name: str, gzip: bool = False,
            links: Iterable[Link] = ()) -> SeededFile:
        """Upload a DataFrame as ``text/csv`` or, with ``gzip``, ``application/x-gzip``."""
        data = frame.to_csv(index=False).encode()
        if gzip:
            buffer = io.BytesIO()
            with gzip_module.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
                handle.write(data)
            data = buffer.getvalue()
        return self.file(owner, group, data, name,
                         "application/x-gzip" if gzip else "text/csv", links)

    def table(self, owner: str, group: str | int, frame: Any, name: str,
              links: Iterable[Link] = (), chunk_rows: int = 10_000) -> SeededFile:
        """Upload a DataFrame as an OMERO.table (SharedResources.newTable) and annotate it."""
        ctx = self._ctx(group)
        resources = self.client(owner).sf.sharedResources(ctx)
        repo_id = resources.repositories().descriptions[0].id.val
        table = resources.newTable(repo_id, name, ctx)
        try:
            columns = omero_columns(frame)
            table.initialize(columns)
            for start in range(0, len(frame), chunk_rows):
                chunk = frame.iloc[start:start + chunk_rows]
                for column, (_, values) in zip(columns, chunk.items(), strict=True):
                    column.values = values.tolist()
                table.addData(columns)
            file_id = table.getOriginalFile().id.val
        finally:
            table.close()
        return self._annotate(owner, group, file_id, links, name)


_SPECIAL = {"image": omero.grid.ImageColumn, "roi": omero.grid.RoiColumn,
            "well": omero.grid.WellColumn, "plate": omero.grid.PlateColumn,
            "dataset": omero.grid.DatasetColumn}


def omero_columns(frame: Any) -> list[Any]:
    """Empty OMERO.tables columns matching a DataFrame's dtypes."""
    columns = []
    for name, dtype in frame.dtypes.items():
        if dtype.kind in "iu":
            cls = _SPECIAL.get(str(name).lower(), omero.grid.LongColumn)
            columns.append(cls(str(name), "", []))
        elif dtype.kind == "f":
            columns.append(omero.grid.DoubleColumn(str(name), "", []))
        elif dtype.kind == "b":
            columns.append(omero.grid.BoolColumn(str(name), "", []))
        else:
            longest = frame[name].astype(str).str.encode("utf-8").str.len().max()
            size = 1 if longest is None or math.isnan(longest) else max(1, int(longest))
            columns.append(omero.grid.StringColumn(str(name), "", size, []))
    return columns
