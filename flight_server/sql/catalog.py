"""The tables a caller can name in SQL: ``t_<file id>``, ``a_<annotation id>`` and an alias.

Every OMERO.table the caller can see (the backend's own ``list_tables``, run as
the caller) gets three names, all lower case so they can be typed unquoted:

* ``t_<OriginalFile id>``, e.g. ``t_42``;
* ``a_<FileAnnotation id>``, e.g. ``a_7``;
* an alias from the file name: ``Cell measurements.h5`` -> ``cell_measurements``.
  When several visible tables give the same alias, each gets its file id as a
  suffix (``cell_measurements_42``), so an alias never silently picks one.

``t_`` and ``a_`` names resolve without a listing: the backend then opens the
table as the caller and refuses it if that user may not read it. All tables live
in catalog ``omero``, schema ``main``; ``omero.main.t_42`` works too.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from flight_server.backends.base import Backend, Caller, TableRef, TableSummary
from flight_server.errors import NotFound

CATALOG = "omero"
DB_SCHEMA = "main"
TABLE_TYPE = "TABLE"

_BY_ID = re.compile(r"([ta])_(\d{1,18})")
_EXTENSIONS = re.compile(r"\.(h5|hdf5|hdf|tiledb|csv)$", re.IGNORECASE)


@dataclass(frozen=True)
class SqlTable:
    """One name a visible table answers to."""

    name: str
    ref: TableRef
    summary: TableSummary


def alias_of(file_name: str) -> str:
    """A typeable name from a file name: lower case letters, digits and underscores."""
    stem = _EXTENSIONS.sub("", file_name.strip())
    slug = re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_")
    if not slug or slug[0].isdigit() or _BY_ID.fullmatch(slug):
        slug = f"tbl_{slug}" if slug else "tbl"
    return slug


def names(summaries: list[TableSummary]) -> list[SqlTable]:
    """Every name of every table, in listing order: id names, then the alias."""
    aliases = Counter(alias_of(s.file.name) for s in summaries)
    out = []
    for s in summaries:
        file_ref = TableRef(file_id=s.file.file_id)
        out.append(SqlTable(f"t_{s.file.file_id}", file_ref, s))
        if s.file.annotation_id is not None:
            out.append(SqlTable(f"a_{s.file.annotation_id}",
                                TableRef(annotation_id=s.file.annotation_id), s))
        alias = alias_of(s.file.name)
        if aliases[alias] > 1:
            alias = f"{alias}_{s.file.file_id}"
        out.append(SqlTable(alias, file_ref, s))
    return out


def visible(backend: Backend, caller: Caller) -> list[SqlTable]:
    return names(backend.list_tables(caller))


def resolve(backend: Backend, caller: Caller, name: str) -> TableRef:
    """The table a SQL name stands for; :class:`NotFound` naming the ways to name one."""
    lower = name.lower()
    match = _BY_ID.fullmatch(lower)
    if match:
        number = int(match.group(2))
        return TableRef(file_id=number) if match.group(1) == "t" else TableRef(annotation_id=number)
    for table in visible(backend, caller):
        if table.name == lower:
            return table.ref
    raise NotFound(
        f"no table named {name!r}: name a table t_<OriginalFile id>, a_<FileAnnotation id> or "
        "by its alias (list them with adbc_get_objects / CommandGetTables)"
    )
