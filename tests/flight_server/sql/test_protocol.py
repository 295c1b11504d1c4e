"""The Flight SQL wire face with a bare pyarrow Flight client: what ADBC and JDBC rely on."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flight_server.sql import is_sql_command
from flight_server.sql.messages import FLIGHT, SQL, pack
from tests.conftest import connect_to


@pytest.fixture(scope="module")
def alice(bridge):
    return connect_to(bridge, "alice")


def info(client, options, message) -> flight.FlightInfo:
    return client.get_flight_info(flight.FlightDescriptor.for_command(pack(message)), options)


def fetch(client, options, message) -> pa.Table:
    got = info(client, options, message)
    return client.do_get(got.endpoints[0].ticket, options).read_all()


def test_sql_info_is_a_dense_union_keyed_by_info_id(alice):
    table = fetch(*alice, SQL["CommandGetSqlInfo"](info=[0, 3, 504]))
    assert table.schema.field("value").type.mode == "dense"
    values = dict(zip(table["info_name"].to_pylist(), table["value"].to_pylist(), strict=True))
    assert values == {0: "omero-flight", 3: True, 504: '"'}
    everything = fetch(*alice, SQL["CommandGetSqlInfo"]())
    assert everything.num_rows > 10


def test_catalog_commands_use_the_spec_column_names(alice):
    assert fetch(*alice, SQL["CommandGetCatalogs"]()).column_names == ["catalog_name"]
    schemas = fetch(*alice, SQL["CommandGetDbSchemas"](db_schema_filter_pattern="ma%"))
    assert schemas.to_pylist() == [{"catalog_name": "omero", "db_schema_name": "main"}]
    tables = fetch(*alice, SQL["CommandGetTables"](include_schema=True,
                                                   table_name_filter_pattern="t\\_%"))
    assert tables.column_names == ["catalog_name", "db_schema_name", "table_name",
                                   "table_type", "table_schema"]
    for row in tables.to_pylist():
        assert row["table_name"].startswith("t_")
        assert isinstance(pa.ipc.read_schema(pa.py_buffer(row["table_schema"])), pa.Schema)
    assert fetch(*alice, SQL["CommandGetTableTypes"]()).to_pylist() == [{"table_type": "TABLE"}]


def test_statement_info_then_ticket(alice):
    got = info(*alice, SQL["CommandStatementQuery"](query="SELECT 1 AS one, 'a' AS letter"))
    assert got.schema.names == ["one", "letter"]
    table = alice[0].do_get(got.endpoints[0].ticket, alice[1]).read_all()
    assert table.to_pylist() == [{"one": 1, "letter": "a"}]


def test_xdbc_type_info(alice):
    types = fetch(*alice, SQL["CommandGetXdbcTypeInfo"]())  # ordered by data_type
    assert types["type_name"].to_pylist() == ["BOOLEAN", "BIGINT", "DOUBLE", "VARCHAR"]
    assert types.schema.field("sql_data_type").nullable is False
    only = fetch(*alice, SQL["CommandGetXdbcTypeInfo"](data_type=12))
    assert only["type_name"].to_pylist() == ["VARCHAR"]


def test_unsupported_requests_answer_unimplemented(alice):
    with pytest.raises(NotImplementedError):
        info(*alice, SQL["CommandGetExportedKeys"](table="t_1"))
    with pytest.raises(NotImplementedError):
        list(alice[0].do_action(flight.Action("BeginTransaction", b""), alice[1]))


def test_updates_and_malformed_commands_are_refused(alice):
    with pytest.raises(flight.FlightServerError) as refused:
        info(*alice, SQL["CommandStatementUpdate"](query="DELETE FROM t_1"))
    assert json.loads(refused.value.extra_info)["code"] == "invalid_argument"
    bogus = b"\x0a\x2e" + b"type.googleapis.com/arrow.flight.protocol.sql." + b"\xff\xff"
    assert is_sql_command(bogus)
    with pytest.raises(flight.FlightServerError) as malformed:
        alice[0].get_flight_info(flight.FlightDescriptor.for_command(bogus), alice[1])
    assert json.loads(malformed.value.extra_info)["code"] == "invalid_argument"


def test_close_session(alice):
    results = list(alice[0].do_action(flight.Action("CloseSession", b""), alice[1]))
    status = FLIGHT["CloseSessionResult"].FromString(results[0].body.to_pybytes()).status
    assert status == 1  # CLOSED


def test_json_protocol_is_untouched(alice):
    assert not is_sql_command(b'{"v":1,"kind":"table","file_id":1}')
    results = list(alice[0].do_action(flight.Action("health", b""), alice[1]))
    assert json.loads(results[0].body.to_pybytes())["status"] == "ok"
