"""The small subset of HQL the stand-in answers.

Supported shape (keywords case-insensitive)::

    select <path>[, <path>...] from <Kind> [as] <alias>
        [[left [outer]] join [fetch] <path> [as] <alias>]...
        [where <path> = :param | <path> = 'text' | <path> = 123 | <path> in (:param)
         [and ...]]
        [order by <path> [asc|desc]]

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
    r"^\s*(?P<path>[\w.]+)\s*(?:(?P<eq>=)\s*(?P<value>:\w+|'[^']*'|-?\d+)"
    r"|\s+in\s*\(\s*(?P<inparam>:\w+)\s*\))\s*$",
    re.IGNORECASE,
)
_PATH = re.compile(r"^\w+(\.\w+)*$")


class UnsupportedQuery(Exception):
    """The stand-in does not understand this HQL."""


@dataclass
class Query:
    kind: str
    alias: str
    select: list[str]
    conditions: list[tuple[str, str, Any]]  # (path, "eq"|"in", literal or ":param")
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
        for part in re.split(r"\s+and\s+", match["where"], flags=re.IGNORECASE):
            cond = _CONDITION.match(part)
            if cond is None:
                raise UnsupportedQuery(
                    f"OMERO stand-in does not support the condition {part!r} in HQL {hql!r}"
                )
            path = _expand(cond["path"], aliases, hql)
            if cond["eq"]:
                conditions.append((path, "eq", _literal(cond["value"])))
            else:
                conditions.append((path, "in", cond["inparam"]))
    order = _expand(match["order"], aliases, hql) if match["order"] else None
    return Query(match["kind"], alias, select, conditions, order,
                 (match["dir"] or "").lower() == "desc")


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
) -> list[list[Any]]:
    """Rows of selected values for the ``roots`` that meet every condition.

    ``resolve(record, fields)`` follows a field path from a record and returns a
    Record, a scalar, or None.
    """
    rows = []
    for root in roots:
        if all(_holds(cond, root, resolve, params, query) for cond in query.conditions):
            rows.append((root, [resolve(root, _fields(p)) for p in query.select]))
    if query.order:
        rows.sort(key=lambda r: _sort_key(resolve(r[0], _fields(query.order))),
                  reverse=query.descending)
    return [values for _, values in rows]


def _fields(path: str) -> list[str]:
    return path.split(".")[1:]


def _holds(cond, root, resolve, params, query) -> bool:
    path, op, value = cond
    actual = resolve(root, _fields(path))
    if isinstance(actual, Record):
        actual = actual.id
    if isinstance(actual, Ref):
        actual = actual.id
    if isinstance(value, str) and value.startswith(":"):
        name = value[1:]
        if name not in params:
            raise UnsupportedQuery(f"parameter {name!r} not given for HQL condition on {path}")
        value = params[name]
    if op == "in":
        return actual in list(value)
    return actual == value


def _sort_key(value: Any) -> Any:
    if isinstance(value, Record):
        return value.id
    return (value is None, value)
