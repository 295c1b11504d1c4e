"""Projection and simple predicates reach the backend read; the server reports rows read."""

from __future__ import annotations

import pyarrow as pa
import pytest

from flight_protocol import columns as cols
from flight_server.errors import InvalidArgument
from flight_server.query import check_query
from flight_server.sql import engine, plan


def report_of(sql_site, sql: str) -> engine.Report:
    return next(r for r in reversed(sql_site.face.reports) if r.sql == sql)


def test_a_selective_query_reads_only_its_rows(sql_site, query):
    cells = sql_site.tables["cells"]
    name = f"t_{cells.file_id}"
    sql = f"SELECT well, area FROM {name} WHERE well = 7 AND area <= 150.5"
    got = query(sql)
    df = cells.frame
    matching = int(((df.well == 7) & (df.area <= 150.5)).sum())
    assert len(got) == matching > 0
    report = report_of(sql_site, sql)
    assert report.rows_read == {name: matching}
    assert report.rows_read[name] < len(df) / 10
    assert report.columns[name] == ("well", "area")
    assert name in report.conditions
    assert report.rows_out == matching


def test_without_pushable_predicate_every_row_is_read(sql_site, query):
    cells = sql_site.tables["cells"]
    name = f"t_{cells.file_id}"
    sql = f"SELECT count(*) AS n FROM {name} WHERE area * 2 > 300"
    assert query(sql)["n"][0] == int((cells.frame.area * 2 > 300).sum())
    report = report_of(sql_site, sql)
    assert report.rows_read == {name: len(cells.frame)}
    assert report.columns[name] == ("area",)
    assert report.conditions == {}


def test_count_star_reads_no_column(sql_site, query):
    cells = sql_site.tables["cells"]
    sql = f"SELECT count(*) AS n FROM t_{cells.file_id}"
    assert query(sql)["n"][0] == len(cells.frame)
    assert report_of(sql_site, sql).columns[f"t_{cells.file_id}"] == ()


def test_join_predicates_reach_each_table(sql_site, query):
    cells, wells = sql_site.tables["cells"], sql_site.tables["wells"]
    sql = (f"SELECT c.well, w.treatment FROM t_{cells.file_id} c, t_{wells.file_id} w "
           "WHERE c.well = w.well AND w.treatment = 'control' AND c.image >= 130")
    got = query(sql)
    joined = cells.frame.merge(wells.frame, on="well")
    assert len(got) == int(((joined.treatment == "control") & (joined.image >= 130)).sum())
    report = report_of(sql_site, sql)
    assert report.rows_read == {
        f"t_{cells.file_id}": int((cells.frame.image >= 130).sum()),
        f"t_{wells.file_id}": int((wells.frame.treatment == "control").sum()),
    }


# -- the planner alone -------------------------------------------------------------------

SCHEMA = pa.schema([
    pa.field("well", pa.int64(), metadata={b"omero.column_type": cols.WELL.encode()}),
    pa.field("area", pa.float64(), metadata={b"omero.column_type": cols.DOUBLE.encode()}),
    pa.field("Label", pa.utf8(), metadata={b"omero.column_type": cols.STRING.encode()}),
    pa.field("flag", pa.bool_(), metadata={b"omero.column_type": cols.BOOL.encode()}),
])  # fmt: skip


@pytest.fixture(scope="module")
def con():
    c = engine.connect(engine.Limits())
    yield c
    c.close()


def analysed(con, sql: str) -> plan.Analysis:
    return plan.analyse(plan.parse(con, sql))


def test_projection_is_case_insensitive_and_star_reads_all(con):
    a = analysed(con, "SELECT label, max(AREA) FROM t_1 GROUP BY 1")
    assert plan.projection(a, SCHEMA) == ("area", "Label")
    assert plan.projection(analysed(con, "SELECT * FROM t_1"), SCHEMA) is None
    for sql in ("SELECT t_1 FROM t_1", "SELECT c FROM t_1 AS c", "SELECT #2 FROM t_1",
                "SELECT COLUMNS('a.*') FROM t_1", "SELECT c.* EXCLUDE (well) FROM t_1 c",
                "SELECT well FROM t_1 NATURAL JOIN t_2"):
        assert plan.projection(analysed(con, sql), SCHEMA) is None, sql


def test_conditions_respect_types_and_nan(con):
    a = analysed(con, "SELECT * FROM t_1 WHERE area > 2 AND 5 > well AND label = 'x''y' "
                      "AND flag = true AND well = 2.5 AND label > 'a' AND area + 1 < 3")
    text, variables = plan.conditions(a, "t_1", {"t_1": SCHEMA})
    assert text == ("((x0 > 2) | (x0 != x0)) & (x1 < 5) & (x2 == \"x'y\") & (x3 == True)")
    assert variables == {"x0": "area", "x1": "well", "x2": "Label", "x3": "flag"}
    checked = check_query(text, {f.name: cols.column_type_of(f) for f in SCHEMA}, variables)
    assert set(checked.columns.values()) == {"area", "well", "Label", "flag"}


def test_no_pushdown_through_outer_joins_ctes_or_repeated_tables(con):
    schemas = {"t_1": SCHEMA, "t_2": SCHEMA}
    outer = analysed(con, "SELECT * FROM t_1 LEFT JOIN t_2 USING (well) WHERE t_2.area > 1")
    assert plan.conditions(outer, "t_2", schemas) is None
    twice = analysed(con, "SELECT * FROM t_1 a JOIN t_1 b USING (well) WHERE a.area > 1")
    assert plan.conditions(twice, "t_1", schemas) is None
    cte = analysed(con, "WITH x AS (SELECT * FROM t_1) SELECT * FROM x WHERE area > 1")
    assert set(cte.tables) == {"t_1"} and plan.conditions(cte, "t_1", schemas) is None
    ambiguous = analysed(con, "SELECT * FROM t_1, t_2 WHERE area > 1")
    assert plan.conditions(ambiguous, "t_1", schemas) is None


def test_only_one_select_parses(con):
    for sql in ("ATTACH 'x'", "SELECT 1; SELECT 2", "DROP TABLE t_1", "PRAGMA version"):
        with pytest.raises(InvalidArgument, match="SQL refused"):
            plan.parse(con, sql)


def test_limits_from_the_environment():
    limits = engine.Limits.from_env({"OMERO_FLIGHT_SQL_MEMORY": "2GB",
                                     "OMERO_FLIGHT_SQL_THREADS": "4",
                                     "OMERO_FLIGHT_SQL_TIMEOUT": "30"})
    assert (limits.memory_limit, limits.threads, limits.timeout) == ("2GB", 4, 30.0)
    assert engine.Limits.from_env({}) == engine.Limits()
    for bad in ({"OMERO_FLIGHT_SQL_MEMORY": "2GB'; SET x=1"}, {"OMERO_FLIGHT_SQL_TIMEOUT": "0"},
                {"OMERO_FLIGHT_SQL_THREADS": "many"}):
        with pytest.raises(ValueError, match="bad Flight SQL limit"):
            engine.Limits.from_env(bad)
