"""Finding OMERO objects as the caller: OriginalFiles, FileAnnotations, link targets.

All queries run across the caller's groups (``omero.group: -1``), so OMERO
decides what the caller sees: something they may not read looks exactly like
something that does not exist. A FileAnnotation the caller may read can point
at an OriginalFile they may not (an annotation in a shared group on a file in
someone's private group): the file itself is always looked up again as the
caller, and a file the caller cannot see is "not found", whatever led to it,
in listings too (``listing``). Nothing about a hidden file (name, owner, group) is told.

Object kinds in HQL come only from the link allowlist
(``flight_protocol.messages.normalize_links``); ids always travel as query
parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import omero
import omero.sys
from omero.rtypes import rlist, rlong, rstring, unwrap

from flight_server.backends.base import FileInfo, TableRef
from flight_server.backends.omero.calls import ALL_GROUPS, CallGate
from flight_server.backends.omero.sessions import OmeroSession
from flight_server.errors import InvalidArgument, NotFound, PermissionDenied

LINK_KINDS = ("Image", "Dataset", "Project", "Plate", "Screen", "Well", "Roi")

_DETAILS = "join fetch f.details.owner join fetch f.details.group"
_FILE_BY_ID = f"select f from OriginalFile f {_DETAILS} where f.id = :id"
_ANNOTATION_BY_ID = (f"select fa from FileAnnotation fa join fetch fa.file f {_DETAILS} "
                     "where fa.id = :id")
_ANNOTATIONS_OF_FILE = "select fa from FileAnnotation fa where fa.file.id = :id order by fa.id"


def query_params(**values: Any) -> Any:
    """omero.sys.Parameters from plain values (ints, strings, lists of ids)."""
    params = omero.sys.ParametersI()
    for name, value in values.items():
        if isinstance(value, list):
            params.map[name] = rlist([rlong(v) for v in value])
        elif isinstance(value, str):
            params.map[name] = rstring(value)
        else:
            params.map[name] = rlong(value)
    return params


def file_info(ofile: Any, annotation_id: int | None) -> FileInfo:
    """FileInfo for a loaded OriginalFile (with loaded owner and group details)."""
    details = ofile.getDetails()
    owner, group = details.getOwner(), details.getGroup()
    return FileInfo(
        file_id=unwrap(ofile.id), name=unwrap(ofile.name) or "",
        mimetype=unwrap(ofile.mimetype) or "", size=unwrap(ofile.size) or 0,
        owner_id=unwrap(owner.id) if owner is not None else -1,
        group_id=unwrap(group.id) if group is not None else -1,
        annotation_id=annotation_id,
        owner=(unwrap(owner.omeName) or "") if owner is not None and owner.isLoaded() else "",
        group=(unwrap(group.name) or "") if group is not None and group.isLoaded() else "",
    )


@dataclass
class Lookup:
    """Queries one caller's OMERO session through the gate."""

    gate: CallGate
    session: OmeroSession

    def _query(self, doing: str) -> Any:
        return self.gate.call(self.session, doing)

    def original_file(self, ref: TableRef, with_annotation: bool = True) -> tuple[Any, FileInfo]:
        """The OriginalFile a ref names, loaded, with its FileInfo; NotFound if not visible.

        ``with_annotation=False``: a file named by its id gets no ``annotation_id`` (one query
        fewer, ~2.5 ms: a read does not need it)."""
        user = self.session.username
        with self._query(f"looking up {ref}"):
            query = self.session.query_service()
            if ref.annotation_id is not None:
                annotation = query.findByQuery(_ANNOTATION_BY_ID,
                                               query_params(id=ref.annotation_id), ALL_GROUPS)
                if annotation is None or annotation.getFile() is None:
                    raise NotFound(f"{ref} does not exist or user {user!r} may not read it")
                # The caller's own permission check on the file, not only on the annotation.
                ofile = query.findByQuery(_FILE_BY_ID,
                                          query_params(id=unwrap(annotation.getFile().id)),
                                          ALL_GROUPS)
                if ofile is None:
                    raise NotFound(f"{ref} does not exist or user {user!r} may not read it")
                return ofile, file_info(ofile, ref.annotation_id)
            ofile = query.findByQuery(_FILE_BY_ID, query_params(id=ref.file_id), ALL_GROUPS)
            if ofile is None:
                raise NotFound(f"{ref} does not exist or user {user!r} may not read it")
            if not with_annotation:
                return ofile, file_info(ofile, None)
            annotations = query.findAllByQuery(_ANNOTATIONS_OF_FILE, query_params(id=ref.file_id),
                                               ALL_GROUPS)
            annotation_id = unwrap(annotations[0].id) if annotations else None
            return ofile, file_info(ofile, annotation_id)

    def link_group(self, links: Sequence[tuple[str, int]]) -> int:
        """The one group all link targets share (the session's group without links)."""
        if not links:
            return self.session.group_id
        groups: dict[int, tuple[str, int]] = {}
        user = self.session.username
        with self._query("checking the link targets"):
            query = self.session.query_service()
            for kind, object_id in links:
                if kind not in LINK_KINDS:
                    raise InvalidArgument(f"cannot link a table to a {kind}")
                found = query.findByQuery(f"select o from {kind} o where o.id = :id",
                                          query_params(id=object_id), ALL_GROUPS)
                if found is None:
                    raise NotFound(f"link target {kind} {object_id} does not exist or user "
                                   f"{user!r} may not read it")
                perms = found.getDetails().getPermissions()
                if perms is not None and not perms.canAnnotate():
                    raise PermissionDenied(f"user {user!r} may not annotate {kind} {object_id}")
                groups.setdefault(unwrap(found.getDetails().getGroup().id), (kind, object_id))
        if len(groups) > 1:
            first, *others = groups.items()
            odd = ", ".join(f"{k} {i} is in group {g}" for g, (k, i) in others)
            raise InvalidArgument(
                f"all link targets must be in one OMERO group: {first[1][0]} {first[1][1]} is "
                f"in group {first[0]}, but {odd}")
        return next(iter(groups))
