"""Answers to the Flight SQL metadata commands, with the schemas the specification fixes.

``CommandGetSqlInfo`` (a dense union of values keyed by info id),
``CommandGetCatalogs``, ``CommandGetDbSchemas``, ``CommandGetTables`` (with
``table_schema`` as an IPC-serialized Arrow schema that keeps the OMERO column
types in field metadata), ``CommandGetTableTypes``, ``CommandGetXdbcTypeInfo``
(the four SQL types OMERO.tables columns map to) and ``CommandGetPrimaryKeys``
(always empty: OMERO.tables have no keys).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import pyarrow as pa

from flight_server import __version__
from flight_server.backends.base import Backend, Caller
from flight_server.errors import BridgeError, InvalidArgument
from flight_server.sql.catalog import CATALOG, DB_SCHEMA, TABLE_TYPE, SqlTable, visible

log = logging.getLogger(__name__)

_STRING_LIST = pa.list_(pa.field("item", pa.utf8()))
_INT_MAP = pa.map_(pa.int32(), pa.list_(pa.field("item", pa.int32())))
SQL_INFO_VALUE = pa.dense_union([
    pa.field("string_value", pa.utf8()),
    pa.field("bool_value", pa.bool_()),
    pa.field("bigint_value", pa.int64()),
    pa.field("int32_bitmask", pa.int32()),
    pa.field("string_list", _STRING_LIST),
    pa.field("int32_to_int32_list_map", _INT_MAP),
])  # fmt: skip
SQL_INFO_SCHEMA = pa.schema([pa.field("info_name", pa.uint32(), nullable=False),
                             pa.field("value", SQL_INFO_VALUE, nullable=False)])
CATALOGS_SCHEMA = pa.schema([pa.field("catalog_name", pa.utf8(), nullable=False)])
DB_SCHEMAS_SCHEMA = pa.schema([pa.field("catalog_name", pa.utf8()),
                               pa.field("db_schema_name", pa.utf8(), nullable=False)])
TABLES_SCHEMA = pa.schema([
    pa.field("catalog_name", pa.utf8()),
    pa.field("db_schema_name", pa.utf8()),
    pa.field("table_name", pa.utf8(), nullable=False),
    pa.field("table_type", pa.utf8(), nullable=False),
])  # fmt: skip
TABLES_WITH_SCHEMA = TABLES_SCHEMA.append(pa.field("table_schema", pa.binary(), nullable=False))
TABLE_TYPES_SCHEMA = pa.schema([pa.field("table_type", pa.utf8(), nullable=False)])
PRIMARY_KEYS_SCHEMA = pa.schema([
    pa.field("catalog_name", pa.utf8()),
    pa.field("db_schema_name", pa.utf8()),
    pa.field("table_name", pa.utf8(), nullable=False),
    pa.field("column_name", pa.utf8(), nullable=False),
    pa.field("key_name", pa.utf8()),
    pa.field("key_sequence", pa.int32(), nullable=False),
])  # fmt: skip

# SqlInfo ids (FlightSql.proto enum SqlInfo) and our answers: (id, union member, value).
_STRING, _BOOL, _BIGINT, _INT32 = 0, 1, 2, 3
SQL_INFO: list[tuple[int, int, object]] = [
    (0, _STRING, "omero-flight"),          # FLIGHT_SQL_SERVER_NAME
    (1, _STRING, __version__),             # FLIGHT_SQL_SERVER_VERSION
    (2, _STRING, pa.__version__),          # FLIGHT_SQL_SERVER_ARROW_VERSION
    (3, _BOOL, True),                      # FLIGHT_SQL_SERVER_READ_ONLY
    (4, _BOOL, True),                      # FLIGHT_SQL_SERVER_SQL
    (5, _BOOL, False),                     # FLIGHT_SQL_SERVER_SUBSTRAIT
    (8, _INT32, 0),                        # FLIGHT_SQL_SERVER_TRANSACTION: none
    (9, _BOOL, False),                     # FLIGHT_SQL_SERVER_CANCEL
    (500, _BOOL, False),                   # SQL_DDL_CATALOG
    (501, _BOOL, False),                   # SQL_DDL_SCHEMA
    (502, _BOOL, False),                   # SQL_DDL_TABLE
    (503, _INT32, 1),                      # SQL_IDENTIFIER_CASE: case-insensitive
    (504, _STRING, '"'),                   # SQL_IDENTIFIER_QUOTE_CHAR
    (505, _INT32, 1),                      # SQL_QUOTED_IDENTIFIER_CASE: case-insensitive
    (506, _BOOL, True),                    # SQL_ALL_TABLES_ARE_SELECTABLE
    (507, _INT32, 3),                      # SQL_NULL_ORDERING: nulls sorted at end
    (517, _STRING, "\\"),                  # SQL_SEARCH_STRING_ESCAPE
    (520, _BOOL, True),                    # SQL_SUPPORTS_COLUMN_ALIASING
    (521, _BOOL, True),                    # SQL_NULL_PLUS_NULL_IS_NULL
    (529, _STRING, "schema"),              # SQL_SCHEMA_TERM
    (531, _STRING, "catalog"),             # SQL_CATALOG_TERM
    (532, _BOOL, True),                    # SQL_CATALOG_AT_START
    (547, _BOOL, False),                   # SQL_SELECT_FOR_UPDATE_SUPPORTED
    (548, _BOOL, False),                   # SQL_STORED_PROCEDURES_SUPPORTED
    (562, _INT32, 0),                      # SQL_DEFAULT_TRANSACTION_ISOLATION: none
    (563, _BOOL, False),                   # SQL_TRANSACTIONS_SUPPORTED
    (572, _BOOL, False),                   # SQL_BATCH_UPDATES_SUPPORTED
    (573, _BOOL, False),                   # SQL_SAVEPOINTS_SUPPORTED
]  # fmt: skip
_UNION_TYPES = [pa.utf8(), pa.bool_(), pa.int64(), pa.int32(), _STRING_LIST, _INT_MAP]


def sql_info(wanted: Iterable[int]) -> pa.Table:
    """The SqlInfo rows asked for (all we know when none are named)."""
    ask = set(wanted)
    rows = [r for r in SQL_INFO if not ask or r[0] in ask]
    values: list[list[object]] = [[] for _ in _UNION_TYPES]
    type_ids, offsets = [], []
    for _, member, value in rows:
        type_ids.append(member)
        offsets.append(len(values[member]))
        values[member].append(value)
    children = [pa.array(v, type=t) for v, t in zip(values, _UNION_TYPES, strict=True)]
    union = pa.UnionArray.from_dense(
        pa.array(type_ids, type=pa.int8()), pa.array(offsets, type=pa.int32()), children,
        [f.name for f in SQL_INFO_VALUE], list(range(len(_UNION_TYPES))))
    names = pa.array([r[0] for r in rows], type=pa.uint32())
    return pa.Table.from_arrays([names, union], schema=SQL_INFO_SCHEMA)


#: Longest table or schema filter pattern a listing accepts.
MAX_PATTERN_CHARS = 1_024


def like(pattern: str | None) -> str | None:
    """A Flight SQL filter pattern (``%`` any string, ``_`` one character), checked."""
    if pattern is not None and len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidArgument(f"a filter pattern is longer than {MAX_PATTERN_CHARS} characters")
    return pattern


def like_matches(pattern: str, text: str) -> bool:
    """Whether ``text`` matches the SQL LIKE ``pattern`` as a whole.

    The classic greedy wildcard match: on a mismatch only the last ``%`` is moved
    on, so the work is at most ``len(pattern) * len(text)`` steps, whatever the
    pattern (a regular expression with several ``.*`` backtracks exponentially in
    their number: ``%a%a%a%b`` against a long run of ``a`` froze the server).
    """
    p = t = 0
    star, resume = -1, 0
    while t < len(text):
        if p < len(pattern) and pattern[p] != "%" and pattern[p] in ("_", text[t]):
            p, t = p + 1, t + 1
        elif p < len(pattern) and pattern[p] == "%":
            star, resume = p, t
            p += 1
        elif star >= 0:
            resume += 1
            p, t = star + 1, resume
        else:
            return False
    while p < len(pattern) and pattern[p] == "%":
        p += 1
    return p == len(pattern)


def _matches(pattern: str | None, value: str) -> bool:
    return pattern is None or like_matches(pattern, value)


def catalogs() -> pa.Table:
    return pa.Table.from_pylist([{"catalog_name": CATALOG}], schema=CATALOGS_SCHEMA)


def db_schemas(catalog: str | None, schema_pattern: str | None) -> pa.Table:
    rows = []
    if catalog in (None, CATALOG) and _matches(like(schema_pattern), DB_SCHEMA):
        rows.append({"catalog_name": CATALOG, "db_schema_name": DB_SCHEMA})
    return pa.Table.from_pylist(rows, schema=DB_SCHEMAS_SCHEMA)


def tables(backend: Backend, caller: Caller, catalog: str | None, schema_pattern: str | None,
           name_pattern: str | None, table_types: list[str], include_schema: bool) -> pa.Table:
    rows: list[dict[str, object]] = []
    wanted = (catalog in (None, CATALOG) and _matches(like(schema_pattern), DB_SCHEMA)
              and (not table_types or TABLE_TYPE in table_types))
    if wanted:
        rx = like(name_pattern)
        schemas: dict[int, bytes | None] = {}
        for table in visible(backend, caller):
            if not _matches(rx, table.name):
                continue
            row: dict[str, object] = {"catalog_name": CATALOG, "db_schema_name": DB_SCHEMA,
                                      "table_name": table.name, "table_type": TABLE_TYPE}
            if include_schema:
                file_id = table.summary.file.file_id
                if file_id not in schemas:
                    schemas[file_id] = _schema_of(backend, caller, table)
                if schemas[file_id] is None:
                    continue  # listed but unreadable now (deleted, broken): left out
                row["table_schema"] = schemas[file_id]
            rows.append(row)
    return pa.Table.from_pylist(rows, schema=TABLES_WITH_SCHEMA if include_schema
                                else TABLES_SCHEMA)


def _schema_of(backend: Backend, caller: Caller, table: SqlTable) -> bytes | None:
    try:
        with backend.open_table(caller, table.ref) as handle:
            return handle.schema.serialize().to_pybytes()
    except BridgeError as exc:
        log.warning("sql: table %s listed but not opened: %s", table.name, exc)
        return None


XDBC_TYPE_INFO_SCHEMA = pa.schema([
    pa.field("type_name", pa.utf8(), nullable=False),
    pa.field("data_type", pa.int32(), nullable=False),
    pa.field("column_size", pa.int32()),
    pa.field("literal_prefix", pa.utf8()),
    pa.field("literal_suffix", pa.utf8()),
    pa.field("create_params", pa.list_(pa.field("item", pa.utf8(), nullable=False))),
    pa.field("nullable", pa.int32(), nullable=False),
    pa.field("case_sensitive", pa.bool_(), nullable=False),
    pa.field("searchable", pa.int32(), nullable=False),
    pa.field("unsigned_attribute", pa.bool_()),
    pa.field("fixed_prec_scale", pa.bool_(), nullable=False),
    pa.field("auto_increment", pa.bool_()),
    pa.field("local_type_name", pa.utf8()),
    pa.field("minimum_scale", pa.int32()),
    pa.field("maximum_scale", pa.int32()),
    pa.field("sql_data_type", pa.int32(), nullable=False),
    pa.field("datetime_subcode", pa.int32()),
    pa.field("num_prec_radix", pa.int32()),
    pa.field("interval_precision", pa.int32()),
])  # fmt: skip

# The SQL types of OMERO.tables columns: (name, XdbcDataType, column size, radix, case-sensitive).
_XDBC_TYPES = [
    ("BIGINT", -5, 19, 10, False),     # Long and id columns
    ("BOOLEAN", -7, 1, None, False),   # XDBC_BIT: BoolColumn
    ("DOUBLE", 8, 15, 10, False),      # DoubleColumn
    ("VARCHAR", 12, None, None, True),  # StringColumn
]  # fmt: skip


def xdbc_type_info(data_type: int | None) -> pa.Table:
    """The SQL types a table column can have (CommandGetXdbcTypeInfo), by data_type."""
    rows = [
        {"type_name": name, "data_type": code, "column_size": size,
         "literal_prefix": "'" if code == 12 else None,
         "literal_suffix": "'" if code == 12 else None, "create_params": None,
         "nullable": 1, "case_sensitive": case, "searchable": 3,
         "unsigned_attribute": False if radix else None, "fixed_prec_scale": False,
         "auto_increment": False if radix else None, "local_type_name": name,
         "minimum_scale": None, "maximum_scale": None, "sql_data_type": code,
         "datetime_subcode": None, "num_prec_radix": radix, "interval_precision": None}
        for name, code, size, radix, case in sorted(_XDBC_TYPES, key=lambda t: (t[1], t[0]))
        if data_type is None or code == data_type
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=XDBC_TYPE_INFO_SCHEMA)


def table_types() -> pa.Table:
    return pa.Table.from_pylist([{"table_type": TABLE_TYPE}], schema=TABLE_TYPES_SCHEMA)


def primary_keys() -> pa.Table:
    return PRIMARY_KEYS_SCHEMA.empty_table()
