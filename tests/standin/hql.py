"""The small subset of HQL the stand-in answers.

Supported shape (keywords case-insensitive)::

    select <path>[, <path>...] from <Kind> [as] <alias>
        [[left [outer]] join [fetch] <path> [as] <alias>]...
        [where <path> <op> :param | <path> <op> 'text' | <path> <op> 123
               | <path> in (:param) | <path> in (select <path> from <Kind> <alias> [where ...])
         [and ...]]
        [order by <path> [asc|desc]]

``<op>`` is one of ``= > >= < <=``. A subquery in ``in (select ...)`` is
uncorrelated (it names only its own alias) and is answered once per query.
IQuery's Filter (``offset``/``limit``, ``ParametersI.page``) pages the rows.

A path starts at an alias and follows fields, e.g. ``fa.file``,
``l.child.file.mimetype``, ``l.parent.id``, ``f.details.owner.id``. This covers
what omero2pandas sends (``SELECT fa.file from FileAnnotation fa where fa.id =
:id``) and the usual "tables linked to an object" queries, e.g. ``select
l.child from ImageAnnotationLink l join fetch l.child c join fetch c.file
where l.parent.id = :id and c.file.mimetype = 'OMERO.tables'``. Anything else
raises ``UnsupportedQuery`` naming the query.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tests.standin.catalog import Record, Ref

_QUERY = re.compile(
    r"^\s*select\s+(?P<select>.+?)\s+from\s+(?P<kind>\w+)\s+(?:as\s+)?(?P<alias>\w+)"
    r"(?P<joins>(?:\s+(?:left\s+(?:outer\s+)?)?join(?:\s+fetch)?\s+[\w.]+(?:\s+(?:as\s+)?"
    r"(?!where\b|order\b|left\b|join\b)\w+)?)*)"
    r"(?:\s+where\s+(?P<where>.+?))?"
    r"(?:\s+order\s+by\s+(?P<order>[\w.]+)(?:\s+(?P<dir>asc|desc))?)?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_JOIN = re.compile(
    r"(?:left\s+(?:outer\s+)?)?join(?:\s+fetch)?\s+(?P<path>[\w.]+)(?:\s+(?:as\s+)?(?P<alias>\w+))?",
    re.IGNORECASE,
)
_CONDITION = re.compile(
    r"^\s*(?P<path>[\w.]+)\s*(?:(?P<op>>=|<=|=|>|<)\s*(?P<value>:\w+|'[^']*'|-?\d+)"
    r"|\s+in\s*\(\s*(?:(?P<inparam>:\w+)|(?P<subquery>select\s.+))\s*\))\s*$",
    re.IGNORECASE | re.DOTALL,
)
_OPS = {"=": "eq", ">": "gt", ">=": "ge", "<": "lt", "<=": "le"}
_PATH = re.compile(r"^\w+(\.\w+)*$")


class UnsupportedQuery(Exception):
    """The stand-in does not understand this HQL."""


@dataclass
class Query:
    kind: str
    alias: str
    select: list[str]
    #: (path, "eq"|"gt"|"ge"|"lt"|"le"|"in", literal, ":param" or a subquery Query)
    conditions: list[tuple[str, str, Any]]
    order: str | None
    descending: bool


def parse(hql: str) -> Query:
    """Parse ``hql`` into a Query, or raise UnsupportedQuery."""
    match = _QUERY.match(hql)
    if match is None:
        raise UnsupportedQuery(f"OMERO stand-in does not support this HQL: {hql!r}")
    alias = match["alias"]
    aliases = {alias: alias}
    for join in _JOIN.finditer(match["joins"] or ""):
        if join["alias"]:
            aliases[join["alias"]] = _expand(join["path"], aliases, hql)
    select = [_expand(p.strip(), aliases, hql) for p in match["select"].split(",")]
    conditions = []
    if match["where"]:
        for part in _top_level_and(match["where"]):
            cond = _CONDITION.match(part)
            if cond is None:
                raise UnsupportedQuery(
                    f"OMERO stand-in does not support the condition {part!r} in HQL {hql!r}"
                )
            path = _expand(cond["path"], aliases, hql)
            if cond["op"]:
                conditions.append((path, _OPS[cond["op"]], _literal(cond["value"])))
            elif cond["subquery"]:
                sub = parse(cond["subquery"])
                if len(sub.select) != 1:
                    raise UnsupportedQuery(f"a subquery selects one value, in HQL {hql!r}")
                conditions.append((path, "in", sub))
            else:
                conditions.append((path, "in", cond["inparam"]))
    order = _expand(match["order"], aliases, hql) if match["order"] else None
    return Query(match["kind"], alias, select, conditions, order,
                 (match["dir"] or "").lower() == "desc")


def _top_level_and(where: str) -> list[str]:
    """The ``and``-joined parts of a where clause, leaving parenthesized subqueries whole."""
    parts, depth, start = [], 0, 0
    for match in re.finditer(r"[()]|\s+and\s+", where, flags=re.IGNORECASE):
        text = match.group(0)
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
        elif depth == 0:
            parts.append(where[start:match.start()])
            start = match.end()
    parts.append(where[start:])
    return parts


def _expand(path: str, aliases: dict[str, str], hql: str) -> str:
    if not _PATH.match(path):
        raise UnsupportedQuery(f"OMERO stand-in does not support {path!r} in HQL {hql!r}")
    head, _, rest = path.partition(".")
    if head not in aliases:
        raise UnsupportedQuery(f"unknown alias {head!r} in HQL {hql!r}")
    base = aliases[head]
    return f"{base}.{rest}" if rest else base


def _literal(text: str) -> Any:
    if text.startswith(":"):
        return text
    if text.startswith("'"):
        return text[1:-1]
    return int(text)


Resolver = Callable[[Any, str], Any]


def run(
    query: Query,
    roots: Iterable[Record],
    resolve: Callable[[Record, list[str]], Any],
    params: dict[str, Any],
    roots_of: Callable[[str], Iterable[Record]] | None = None,
    visible: Callable[[Record], bool] | None = None,
    *,
    keyed_select: bool = False,
) -> list[list[Any]]:
    """Rows of selected values for the ``roots`` that meet every condition.

    ``resolve(record, fields)`` follows a field path from a record and returns a
    Record, a scalar, or None; ``roots_of(kind)`` gives the records a subquery
    starts from and ``visible(record)`` whether the caller may see a root.

    Like a database's indexes and foreign keys, conditions on a root's own id or
    on a reference's id (``l.child.id``: the link's column, not a join) are
    checked first from the record itself, before visibility and joins, so a
    query costs little per root it rejects; ``keyed_select`` answers such paths
    in the select the same way (a subquery's ids).
    """
    conditions = [(_fields(path), op, value) for path, op, value in
                  (_bound(cond, roots_of, resolve, params, visible)
                   for cond in query.conditions)]
    keyed = [c for c in conditions if _is_keyed(c[0])]
    joined = [c for c in conditions if not _is_keyed(c[0])]
    selects = [_fields(p) for p in query.select]
    rows = []
    for root in roots:
        if not all(_holds(c, root, resolve) for c in keyed):
            continue
        if visible is not None and not visible(root):
            continue
        if all(_holds(c, root, resolve) for c in joined):
            rows.append((root, [_value(root, f, resolve, keyed_select) for f in selects]))
    if query.order:
        rows.sort(key=lambda r: _sort_key(_value(r[0], _fields(query.order), resolve, True)),
                  reverse=query.descending)
    return [values for _, values in rows]


def _is_keyed(fields: list[str]) -> bool:
    return fields == ["id"] or (len(fields) == 2 and fields[1] == "id")


_UNKEYED = object()


def _key(root: Record, fields: list[str]) -> Any:
    """A root's own id or a reference's id, read from the record (``_UNKEYED`` if not so)."""
    if fields == ["id"]:
        return root.id
    if len(fields) == 2 and fields[1] == "id":
        ref = root.fields.get(fields[0])
        if isinstance(ref, Ref):
            return ref.id
    return _UNKEYED


def _value(root: Record, fields: list[str], resolve, keyed: bool) -> Any:
    if keyed:
        key = _key(root, fields)
        if key is not _UNKEYED:
            return key
    return resolve(root, fields)


def _fields(path: str) -> list[str]:
    return path.split(".")[1:]


def _bound(cond, roots_of, resolve, params, visible) -> tuple[str, str, Any]:
    """A condition with its parameter, or its subquery's answer (a set), filled in."""
    path, op, value = cond
    if isinstance(value, Query):
        if roots_of is None:
            raise UnsupportedQuery(f"no records to answer the subquery on {path}")
        return path, op, {_plain(v[0]) for v in run(value, roots_of(value.kind), resolve,
                                                     params, roots_of, visible,
                                                     keyed_select=True)}
    if isinstance(value, str) and value.startswith(":"):
        name = value[1:]
        if name not in params:
            raise UnsupportedQuery(f"parameter {name!r} not given for HQL condition on {path}")
        value = params[name]
    if op == "in":
        value = {_plain(v) for v in value}  # a set, as a database would hash it
    return path, op, value


def _plain(value: Any) -> Any:
    if isinstance(value, Record | Ref):
        return value.id
    return value


def _holds(cond, root, resolve) -> bool:
    fields, op, value = cond
    actual = _plain(_value(root, fields, resolve, True))
    if op == "in":
        return actual in value
    if op == "eq":
        return actual == value
    if actual is None:
        return False
    if op == "gt":
        return actual > value
    if op == "ge":
        return actual >= value
    if op == "lt":
        return actual < value
    return actual <= value


def _sort_key(value: Any) -> Any:
    if isinstance(value, Record):
        return value.id
    return (value is None, value)
