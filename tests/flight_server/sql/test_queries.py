"""SQL through the real ADBC Flight SQL driver, on both backends, checked against pandas."""

from __future__ import annotations

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from flight_protocol.messages import META_COLUMN_TYPE
from flight_server.sql.catalog import alias_of


def same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    want = want.reset_index(drop=True)
    got = got.reset_index(drop=True)
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want) > 0
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_tables_are_listed_with_their_schemas(sql_site, owner_sql):
    cells = sql_site.tables["cells"]
    objects = owner_sql.adbc_get_objects(depth="all").read_all().to_pylist()
    assert [c["catalog_name"] for c in objects] == ["omero"]
    schemas = objects[0]["catalog_db_schemas"]
    assert [s["db_schema_name"] for s in schemas] == ["main"]
    listed = {t["table_name"]: t for t in schemas[0]["db_schema_tables"]}
    for name in (f"t_{cells.file_id}", f"a_{cells.annotation_id}", alias_of(cells.name)):
        assert name in listed, sorted(listed)
        columns = [c["column_name"] for c in listed[name]["table_columns"]]
        assert columns == list(cells.frame.columns)
    assert f"t_{sql_site.tables['secret'].file_id}" not in listed  # carol's private table

    schema = owner_sql.adbc_get_table_schema(f"t_{cells.file_id}")
    assert schema.names == list(cells.frame.columns)
    assert schema.field("area").type == pa.float64()
    assert schema.field("well").metadata[META_COLUMN_TYPE] == b"::omero::grid::WellColumn"
    assert schema.field("label").metadata[META_COLUMN_TYPE] == b"::omero::grid::StringColumn"
    info = owner_sql.adbc_get_info()
    assert info["vendor_name"] == "omero-flight"


def test_projection_and_where(sql_site, query):
    cells = sql_site.tables["cells"]
    df = cells.frame
    got = query(f"SELECT well, area FROM t_{cells.file_id} "
                "WHERE area > 120 AND label = 'nucleus' ORDER BY area, well")
    want = df[(df.area > 120) & (df.label == "nucleus")].sort_values(["area", "well"])
    same(got, want[["well", "area"]])


def test_group_by_order_by_limit(sql_site, query):
    cells = sql_site.tables["cells"]
    got = query(f"SELECT well, avg(area) AS mean_area, count(*) AS n FROM t_{cells.file_id} "
                "WHERE flag GROUP BY well ORDER BY mean_area DESC, well LIMIT 5")
    df = cells.frame[cells.frame.flag]
    want = (df.groupby("well").agg(mean_area=("area", "mean"), n=("area", "size"))
            .reset_index().sort_values(["mean_area", "well"], ascending=[False, True]).head(5))
    same(got, want)


def test_join_of_two_tables(sql_site, query):
    cells, wells = sql_site.tables["cells"], sql_site.tables["wells"]
    got = query(
        f"SELECT w.treatment, count(*) AS cells, sum(c.area) AS total_area "
        f"FROM t_{cells.file_id} AS c JOIN t_{wells.file_id} AS w ON c.well = w.well "
        "WHERE w.dose >= 0.5 AND c.image <> 120 GROUP BY w.treatment ORDER BY w.treatment")
    joined = cells.frame.merge(wells.frame, on="well")
    joined = joined[(joined.dose >= 0.5) & (joined.image != 120)]
    want = (joined.groupby("treatment").agg(cells=("area", "size"), total_area=("area", "sum"))
            .reset_index().sort_values("treatment"))
    same(got, want)


def test_every_name_of_a_table_reads_it(sql_site, query):
    cells = sql_site.tables["cells"]
    counts = [query(f"SELECT count(*) AS n FROM {name}")["n"][0]
              for name in (f"t_{cells.file_id}", f"a_{cells.annotation_id}",
                           alias_of(cells.name), f"omero.main.t_{cells.file_id}")]
    assert counts == [len(cells.frame)] * 4


def test_self_join_rescans_the_table(sql_site, query):
    wells = sql_site.tables["wells"]
    got = query(f"SELECT a.well, b.well AS next FROM t_{wells.file_id} a "
                f"JOIN t_{wells.file_id} b ON b.well = a.well + 1 ORDER BY a.well")
    want = pd.DataFrame({"well": wells.frame.well[:-1].values,
                         "next": wells.frame.well[1:].values})
    same(got, want)


def test_self_join_with_star_keeps_both_sides(sql_site, owner_sql):
    """``SELECT *`` over a self-join has duplicate column names; the FlightInfo schema and
    the stream's schema must agree (they did not: ADBC said "inconsistent schema")."""
    wells = sql_site.tables["wells"]
    with owner_sql.cursor() as cur:
        cur.execute(f"SELECT * FROM t_{wells.file_id} a JOIN t_{wells.file_id} b "
                    "ON b.well = a.well ORDER BY a.well")
        got = cur.fetch_arrow_table()
    width = len(wells.frame.columns)
    assert got.num_columns == 2 * width and got.num_rows == len(wells.frame)
    assert got.column(0).to_pylist() == got.column(width).to_pylist()


def test_polars_read_database_over_adbc(sql_site, owner_sql):
    pl = pytest.importorskip("polars")
    cells = sql_site.tables["cells"]
    got = pl.read_database(
        f"SELECT label, max(area) AS biggest FROM t_{cells.file_id} "
        "GROUP BY label ORDER BY label", connection=owner_sql)
    want = cells.frame.groupby("label").agg(biggest=("area", "max")).reset_index()
    same(got.to_pandas(), want)


def test_results_into_duckdb(sql_site, owner_sql):
    cells = sql_site.tables["cells"]
    with owner_sql.cursor() as cur:
        cur.execute(f"SELECT image, area FROM t_{cells.file_id} WHERE image = 105")
        local = duckdb.connect()
        local.register("result", cur.fetch_record_batch())
        got = local.sql("SELECT image, round(sum(area), 3) AS s FROM result GROUP BY image").df()
    df = cells.frame[cells.frame.image == 105]
    same(got, pd.DataFrame({"image": [105], "s": [round(df.area.sum(), 3)]}))


def test_prepared_statement(sql_site, owner_sql):
    cells = sql_site.tables["cells"]
    with owner_sql.cursor() as cur:
        sql = f"SELECT count(*) AS n FROM t_{cells.file_id} WHERE well = 7"
        schema = cur.adbc_prepare(sql)
        assert schema is None or schema.names == ["n"]  # the dataset schema, when reported
        cur.execute(sql)
        assert cur.fetchone()[0] == int((cells.frame.well == 7).sum())


def test_parameters_bound_to_a_prepared_statement(sql_site, owner_sql):
    cells = sql_site.tables["cells"]
    df = cells.frame
    with owner_sql.cursor() as cur:
        sql = (f"SELECT count(*) AS n, sum(area) AS s FROM t_{cells.file_id} "
               "WHERE well = ? AND label = ?")
        for well, label in ((3, "nucleus"), (11, "membrane")):
            cur.execute(sql, (well, label))
            n, total = cur.fetchone()
            chosen = df[(df.well == well) & (df.label == label)]
            assert n == len(chosen) > 0
            assert total == pytest.approx(chosen.area.sum())
            report = next(r for r in reversed(sql_site.face.reports) if r.sql == sql)
            assert report.rows_read == {f"t_{cells.file_id}": len(chosen)}  # pushed down
