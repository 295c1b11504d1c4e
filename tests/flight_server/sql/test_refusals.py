"""SQL that reaches for files, databases, extensions or other users' tables is refused with a
clear, typed error; a statement past its memory or time limit is cancelled; the server keeps
serving after each."""

from __future__ import annotations

import dataclasses

import adbc_driver_manager
import pytest

from flight_server.sql import face
from tests.conftest import start_bridge
from tests.flight_server.sql.conftest import fsql


def refused(conn, sql: str, *words: str) -> str:
    with pytest.raises(adbc_driver_manager.Error) as info:
        with conn.cursor() as cur:
            cur.execute(sql)
            cur.fetchall()
    message = str(info.value)
    assert "INTERNAL" not in message and "internal server error" not in message, message
    for word in words:
        assert word in message, message
    return message


@pytest.fixture(autouse=True)
def still_serving(owner_sql):
    yield
    with owner_sql.cursor() as cur:
        cur.execute("SELECT 41 + 1 AS answer")
        assert cur.fetchone() == (42,)


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM read_parquet('http://127.0.0.1:9/x.parquet')",
])  # fmt: skip
def test_no_file_or_network_access(owner_sql, sql):
    refused(owner_sql, sql, "sandbox")


@pytest.mark.parametrize("sql", [
    "ATTACH '/tmp/evil.duckdb' AS evil",
    "ATTACH ':memory:' AS scratch",
    "INSTALL httpfs",
    "LOAD httpfs",
    "COPY (SELECT 1) TO '/tmp/out.csv'",
    "SET enable_external_access = true",
    "CREATE TABLE t AS SELECT 1",
    "SELECT 1; SELECT 2",
])  # fmt: skip
def test_only_one_select(owner_sql, sql):
    refused(owner_sql, sql, "SQL refused")


def test_another_users_private_table(sql_site, owner_sql):
    secret = sql_site.tables["secret"]
    for name in (f"t_{secret.file_id}", f"a_{secret.annotation_id}"):
        message = refused(owner_sql, f"SELECT count(*) FROM {name}")
        assert "permission" in message.lower() or "not found" in message.lower() \
            or "does not exist" in message.lower(), message
    # carol herself reads it
    conn = sql_site.adbc("outsider")
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM t_{secret.file_id}")
            assert cur.fetchone()[0] == len(secret.frame)
    finally:
        conn.close()


def test_unknown_table_names_the_ways_to_name_one(owner_sql):
    refused(owner_sql, "SELECT * FROM no_such_table", "no table named", "t_<OriginalFile id>")
    refused(owner_sql, "SELECT * FROM other.main.t_1", "tables live in omero.main")


def test_wrong_password_is_refused(sql_site):
    username, _ = sql_site.users["owner"]
    with pytest.raises(adbc_driver_manager.Error) as info:
        fsql.connect(sql_site.url, db_kwargs={"username": username, "password": "wrong"})
    assert "UNAUTHENTICATED" in str(info.value)


@pytest.fixture
def limited(tmp_path):
    bridge = start_bridge(tmp_path / "store")
    sql = face(bridge.server)
    conn = fsql.connect(bridge.url, db_kwargs={"username": "alice",
                                               "password": bridge.passwords["alice"]},
                        autocommit=True)
    yield conn, sql
    conn.close()
    bridge.server.shutdown()


def test_a_statement_past_its_time_limit_is_cancelled(limited):
    conn, sql = limited
    sql.limits = dataclasses.replace(sql.limits, timeout=1.0)
    refused(conn, "SELECT sum(a.range * b.range) FROM range(100000000) a, range(1000) b",
            "cancelled", "1 s limit")
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


def test_a_statement_past_its_memory_limit_is_cancelled(limited):
    conn, sql = limited
    sql.limits = dataclasses.replace(sql.limits, memory_limit="64MB")
    refused(conn, "SELECT list(range) FROM range(50000000)", "cancelled", "64MB memory limit")
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


def test_parameters_must_be_bound(owner_sql):
    refused(owner_sql, "SELECT ?::INTEGER + 1 AS x", "takes 1 parameter(s)", "bind values")
    with pytest.raises(adbc_driver_manager.Error) as info:
        with owner_sql.cursor() as cur:
            cur.execute("SELECT ?::INTEGER + ?::INTEGER AS x", (1,))
            cur.fetchall()
    assert "takes 2 parameter(s), 1 were bound" in str(info.value), info.value
