"""The stand-in's HQL subset: what it parses and what it refuses (no server needed)."""

from __future__ import annotations

import pytest

from tests.standin.catalog import Record, Ref
from tests.standin.hql import UnsupportedQuery, parse, run


@pytest.mark.parametrize("hql", [
    "select i from Image i, Dataset d where i.id = d.id",
    "select count(i) from Image i",
    "delete from Image i where i.id = :id",
    "select i from Image i where i.name like :name",
    "select i from Image i where i.id > :id",
    "select i from Image i where i.id = :id or i.id = :other",
    "select x.child from ImageAnnotationLink l",
])
def test_refuses_other_shapes(hql):
    with pytest.raises(UnsupportedQuery, match="HQL"):
        parse(hql)


def test_parses_joins_aliases_and_order():
    query = parse("SELECT l.child FROM ImageAnnotationLink AS l JOIN FETCH l.child c "
                  "left outer join fetch c.file f WHERE l.parent.id = :id "
                  "AND f.mimetype = 'OMERO.tables' ORDER BY f.id DESC")
    assert query.kind == "ImageAnnotationLink"
    assert query.select == ["l.child"]
    assert query.conditions == [("l.parent.id", "eq", ":id"),
                                ("l.child.file.mimetype", "eq", "OMERO.tables")]
    assert (query.order, query.descending) == ("l.child.file.id", True)


def test_runs_conditions_and_in_lists():
    records = [Record("FileAnnotation", i, 0, 1, {"file": Ref("OriginalFile", 10 + i)})
               for i in (1, 2, 3)]

    def resolve(record, path):
        value = record
        for name in path:
            value = value.id if name == "id" else value.fields[name]
            if isinstance(value, Ref):
                value = Record(value.kind, value.id, 0, 1, {})
        return value

    query = parse("select fa.file.id from FileAnnotation fa where fa.id in (:ids) "
                  "order by fa.id desc")
    assert run(query, records, resolve, {"ids": [1, 3]}) == [[13], [11]]
    with pytest.raises(UnsupportedQuery, match="parameter 'ids' not given"):
        run(query, records, resolve, {})
