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
    "select i from Image i where i.id != :id",
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


def test_runs_comparisons_and_uncorrelated_subqueries():
    files = {i: Record("OriginalFile", i, 0, 1, {"mimetype": "OMERO.tables" if i % 2 else "csv"})
             for i in range(1, 7)}
    annotations = [Record("FileAnnotation", i, 0, 1, {"file": Ref("OriginalFile", i)})
                   for i in range(1, 7)]
    links = [Record("ImageAnnotationLink", n, 0, 1, {"parent": Ref("Image", parent),
                                                     "child": Ref("FileAnnotation", child)})
             for n, (parent, child) in enumerate([(7, 1), (7, 2), (8, 3), (7, 5)], 1)]
    records = {"FileAnnotation": annotations, "ImageAnnotationLink": links}

    def resolve(record, path):
        value = record
        for name in path:
            value = value.id if name == "id" else value.fields[name]
            if isinstance(value, Ref):
                value = files.get(value.id) if value.kind == "OriginalFile" else \
                    Record(value.kind, value.id, 0, 1, {})
        return value

    query = parse("select fa.id from FileAnnotation fa join fetch fa.file f "
                  "where f.mimetype = :m and fa.id > :after and fa.id in "
                  "(select l.child.id from ImageAnnotationLink l where l.parent.id = :id) "
                  "order by fa.id")
    assert query.conditions[2][0] == "fa.id" and query.conditions[2][1] == "in"
    params = {"m": "OMERO.tables", "after": 0, "id": 7}
    assert run(query, annotations, resolve, params, records.get) == [[1], [5]]
    assert run(query, annotations, resolve, {**params, "after": 1}, records.get) == [[5]]
    with pytest.raises(UnsupportedQuery, match="subquery"):
        run(query, annotations, resolve, params)
