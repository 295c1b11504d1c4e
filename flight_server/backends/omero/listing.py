"""Table listings as the caller, filtered and paged in OMERO's own query.

One page is one HQL query for at most ``page_size`` FileAnnotations whose
OriginalFile has the OMERO.tables mimetype, after the last annotation id of
the previous page (``fa.id > :after order by fa.id``, limited by IQuery's
Filter): keyset paging, so a page costs the same however deep it is. Listing
by object kind or object puts the link in the same query as an uncorrelated
subquery (``fa.id in (select l.child.id from ImageAnnotationLink l where
l.parent.id = :id)``), which the database answers as a semi-join: no link
ids travel, and links to other annotations (tags, attachments) never leave
the database. Then, for the page's ids only (never more than a page of bind
parameters), one query checks the caller may read each OriginalFile too and
one query per link kind finds each table's links.

Kinds in HQL come only from ``lookup.LINK_KINDS``; every value travels as a
query parameter. Row counts are not listed (``rows: null``): OMERO knows them
only by opening each table.
"""

from __future__ import annotations

from typing import Any

from omero.rtypes import unwrap

from flight_server.backends.base import TABLE_MIMETYPE, TablePage, TableSummary
from flight_server.backends.omero.calls import ALL_GROUPS
from flight_server.backends.omero.lookup import (
    _DETAILS,
    LINK_KINDS,
    file_info,
    query_params,
)
from flight_server.backends.paging import token_after
from flight_server.errors import InvalidArgument

_PAGE = (f"select fa from FileAnnotation fa join fetch fa.file f {_DETAILS} "
         "where f.mimetype = :mimetype and fa.id > :after{linked} order by fa.id")
_LINKED = " and fa.id in (select l.child.id from {kind}AnnotationLink l{parent})"
_PARENT = " where l.parent.id = :id"
_VISIBLE_FILES = "select f.id from OriginalFile f where f.id in (:ids)"
_LINKS_OF = ("select l.parent.id, l.child.id from {kind}AnnotationLink l "
             "where l.child.id in (:ids)")


def page_query(object_type: str | None, object_id: int | None) -> str:
    """The HQL of one listing page (tables linked to an object, a kind, or any)."""
    if object_type is None:
        return _PAGE.format(linked="")
    if object_type not in LINK_KINDS:
        raise InvalidArgument(f"tables cannot be linked to a {object_type}")
    parent = _PARENT if object_id is not None else ""
    return _PAGE.format(linked=_LINKED.format(kind=object_type, parent=parent))


def table_page(query: Any, object_type: str | None, object_id: int | None,
               size: int, after: int) -> TablePage:
    """Up to ``size`` tables with FileAnnotation ids above ``after``, with a token for the
    rest.

    Runs in one gate call (``query`` is the caller's IQuery). A page is filled
    from as many queries as the caller's hidden files need (usually one).
    """
    hql = page_query(object_type, object_id)
    out: list[TableSummary] = []
    while len(out) < size:
        wanted = size - len(out)
        values: dict[str, Any] = {"mimetype": TABLE_MIMETYPE, "after": after}
        if object_type is not None and object_id is not None:
            values["id"] = object_id
        params = query_params(**values).page(0, wanted)
        annotations = query.findAllByQuery(hql, params, ALL_GROUPS)
        out.extend(_summaries(query, annotations))
        if len(annotations) < wanted:
            return TablePage(out, None)
        after = unwrap(annotations[-1].id)
    return TablePage(out, token_after(after))


def _summaries(query: Any, annotations: list[Any]) -> list[TableSummary]:
    """The page's annotations whose file the caller may read, with their links."""
    annotations = _readable_files(query, annotations)
    ids = [unwrap(a.id) for a in annotations]
    links: dict[int, list[tuple[str, int]]] = {i: [] for i in ids}
    if ids:
        for kind in LINK_KINDS:
            rows = query.projection(_LINKS_OF.format(kind=kind), query_params(ids=ids),
                                    ALL_GROUPS)
            for row in rows:
                parent, child = unwrap(row[0]), unwrap(row[1])
                if parent is not None and child in links:
                    links[child].append((kind, parent))
    return [TableSummary(file_info(a.getFile(), unwrap(a.id)),
                         tuple(sorted(links[unwrap(a.id)])), None) for a in annotations]


def _readable_files(query: Any, annotations: list[Any]) -> list[Any]:
    """The annotations whose OriginalFile the caller may read too (one query as the caller)."""
    file_ids = sorted({unwrap(a.getFile().id) for a in annotations if a.getFile() is not None})
    if not file_ids:
        return []
    rows = query.projection(_VISIBLE_FILES, query_params(ids=file_ids), ALL_GROUPS)
    visible = {unwrap(r[0]) for r in rows if r}
    return [a for a in annotations
            if a.getFile() is not None and unwrap(a.getFile().id) in visible]
