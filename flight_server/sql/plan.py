"""What a statement reads: its tables, the columns it mentions, the predicates to push down.

DuckDB parses the statement (``json_serialize_sql``, the engine's own parser,
which also refuses anything but one SELECT). From the parse tree:

* **tables**: every ``BASE_TABLE`` that is not a CTE name, with how often it
  occurs;
* **projection**: a table is read with only the columns whose names appear
  anywhere in the statement (case-insensitive, as DuckDB resolves them). A star,
  ``COLUMNS(...)``, a positional reference (``#2``), a NATURAL join or a
  whole-row reference (a table name or alias used as a value) reads every column. Reading a superset
  is always correct: the engine still does the real work;
* **predicates**: in a statement whose top level is one SELECT over base tables
  joined by INNER joins, each top-level ``AND`` term of WHERE that compares one
  column of a table occurring once with a constant (or a bound parameter value)
  becomes a PyTables condition for that table's read. It is written as a
  condition text with the column named through a variable and goes through
  ``flight_server.query.check_query`` like any user query. The engine re-applies
  the whole WHERE, so a pushed condition only has to keep every row that could
  match; it never has to be exact.

A SELECT whose output rows each come from one input row of its one table (no
aggregate, window, DISTINCT, ORDER BY, LIMIT, subquery or CTE, and no pushed
condition) is **row-wise**: it can run on row ranges of that table one by one,
which is how a large result is served as several endpoints.

Types are respected: integer columns take integer constants, double columns
numbers (``>``/``>=`` also keep NaN, which DuckDB sorts above every number),
string and boolean columns ``=``/``<>`` with a constant of their type. Anything
else is left to the engine.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from flight_protocol import columns as cols
from flight_server.errors import InvalidArgument, NotFound
from flight_server.sql.catalog import CATALOG, DB_SCHEMA

_OPS = {
    "COMPARE_EQUAL": "==", "COMPARE_NOTEQUAL": "!=", "COMPARE_LESSTHAN": "<",
    "COMPARE_GREATERTHAN": ">", "COMPARE_LESSTHANOREQUALTO": "<=",
    "COMPARE_GREATERTHANOREQUALTO": ">=",
}  # fmt: skip
_FLIP = {"==": "==", "!=": "!=", "<": ">", ">": "<", "<=": ">=", ">=": "<="}
_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class Predicate:
    """``column op value`` from WHERE; ``qualifier`` is the table or alias it was written with."""

    qualifier: str | None
    column: str
    op: str
    value: bool | int | float | str


@dataclass
class Analysis:
    """What one SELECT statement reads."""

    tables: Counter[str] = field(default_factory=Counter)  # lower-case name -> occurrences
    mentioned: set[str] = field(default_factory=set)  # lower-case identifiers
    whole_rows: bool = False
    from_aliases: dict[str, str] = field(default_factory=dict)  # alias/name -> table
    predicates: list[Predicate] = field(default_factory=list)
    row_wise: str | None = None  # the one table of a row-by-row SELECT (split in row ranges)
    parameters: int = 0  # how many distinct ? / $n parameters the statement takes


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def parse(con: Any, sql: str) -> dict[str, Any]:
    """The parse tree of exactly one SELECT statement, or :class:`InvalidArgument`."""
    text = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0]
    tree = json.loads(text)
    if tree.get("error"):
        message = tree.get("error_message", "cannot parse")
        if "Only SELECT" in message:
            message = ("only SELECT statements (with WITH, UNION, VALUES ...) are accepted: "
                       "this server is read-only and cannot attach, load, copy or set anything")
        raise InvalidArgument(f"SQL refused: {message}")
    statements = tree.get("statements") or []
    if len(statements) != 1:
        raise InvalidArgument(f"SQL refused: send exactly one statement, not {len(statements)}")
    return statements[0]["node"]


def analyse(node: dict[str, Any], scalars: frozenset[str] = frozenset(),
            values: tuple[Any, ...] = ()) -> Analysis:
    """Tables, mentioned columns and predicates; ``scalars`` are the engine's scalar
    function names (a statement calling only those can be run on row ranges), ``values``
    the parameter values bound to ``?``/``$1`` (used as constants in predicates)."""
    out = Analysis()
    aliases: set[str] = set()
    parameters: set[str] = set()
    ctes = {
        entry["key"].lower()
        for n in _walk(node) if isinstance(n.get("cte_map"), dict)
        for entry in n["cte_map"].get("map", [])
    }
    for n in _walk(node):
        if n.get("type") == "BASE_TABLE":
            name = n["table_name"].lower()
            if n.get("alias"):
                aliases.add(n["alias"].lower())
            catalog, schema = n.get("catalog_name", ""), n.get("schema_name", "")
            if not catalog and not schema and name in ctes:
                continue
            if catalog.lower() not in ("", CATALOG) or schema.lower() not in ("", DB_SCHEMA):
                raise NotFound(f"no table {'.'.join(filter(None, [catalog, schema, name]))}: "
                               f"tables live in {CATALOG}.{DB_SCHEMA}")
            out.tables[name] += 1
        elif n.get("class") == "COLUMN_REF":
            out.mentioned.update(c.lower() for c in n.get("column_names", []))
        elif n.get("class") in ("STAR", "POSITIONAL_REFERENCE") \
                or n.get("ref_type") == "NATURAL":
            out.whole_rows = True  # *, COLUMNS(...), #2, NATURAL JOIN: every column counts
        for name in n.get("using_columns") or []:
            out.mentioned.add(str(name).lower())
        if n.get("class") == "PARAMETER":
            parameters.add(str(n.get("identifier")))
    if out.mentioned & (set(out.tables) | aliases):
        out.whole_rows = True  # SELECT t FROM t, SELECT c FROM t AS c: the row as a struct
    out.parameters = len(parameters)
    _top_level_predicates(node, out, values)
    if _row_wise(node, scalars):
        out.row_wise = node["from_table"]["table_name"].lower()
    return out


def _row_wise(node: dict[str, Any], scalars: frozenset[str]) -> bool:
    """Is each output row made from one input row of one table, so that the statement gives
    the same rows run on row ranges one by one? No aggregate, window, DISTINCT, ORDER BY,
    LIMIT, subquery or CTE; every function a scalar one."""
    if node.get("type") != "SELECT_NODE" or node.get("modifiers") \
            or node.get("group_expressions") or node.get("group_sets") or node.get("having") \
            or node.get("qualify") or node.get("sample") \
            or (node.get("cte_map") or {}).get("map") \
            or node.get("aggregate_handling") != "STANDARD_HANDLING":
        return False
    source = node.get("from_table") or {}
    if source.get("type") != "BASE_TABLE" or source.get("sample") is not None:
        return False
    for n in _walk([node.get("select_list"), node.get("where_clause")]):
        if n.get("class") in ("WINDOW", "SUBQUERY"):
            return False
        if n.get("class") == "FUNCTION" and str(n.get("function_name", "")).lower() not in scalars:
            return False
    return True


def _from_tables(node: dict[str, Any], aliases: dict[str, str]) -> bool:
    """Collect alias -> table of an INNER-join tree of base tables; False if it is anything else."""
    if node.get("type") == "BASE_TABLE" and node.get("sample") is None:
        name = node["table_name"].lower()
        aliases[(node.get("alias") or name).lower()] = name
        return True
    if node.get("type") == "JOIN" and node.get("join_type") == "INNER" \
            and node.get("ref_type") in ("REGULAR", "CROSS"):
        return _from_tables(node["left"], aliases) and _from_tables(node["right"], aliases)
    return False


def _conjuncts(expr: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    if not expr:
        return
    if expr.get("type") == "CONJUNCTION_AND":
        for child in expr.get("children", []):
            yield from _conjuncts(child)
    else:
        yield expr


def _constant(expr: dict[str, Any], values: tuple[Any, ...]
              ) -> bool | int | float | str | None:
    if expr.get("class") == "PARAMETER":
        identifier = str(expr.get("identifier", ""))
        if not identifier.isdigit() or not 1 <= int(identifier) <= len(values):
            return None
        value = values[int(identifier) - 1]
        if type(value) is float and not math.isfinite(value):
            return None
        if type(value) is int and not _INT64[0] <= value <= _INT64[1]:
            return None
        return value if type(value) in (bool, int, float, str) else None
    literal = expr.get("literal") if expr.get("class") == "CONSTANT" else None
    if not isinstance(literal, dict):
        return None
    kind, text = literal.get("kind"), literal.get("text")
    if not isinstance(text, str):
        return None
    try:
        if kind in ("INTEGER", "BIGINT", "HUGEINT"):
            value = int(text)
            return value if _INT64[0] <= value <= _INT64[1] else None
        if kind in ("NUMERIC", "DECIMAL", "DOUBLE", "FLOAT"):
            number = float(text)
            return number if math.isfinite(number) else None
    except ValueError:
        return None
    if kind in ("STRING", "VARCHAR"):
        return text
    if kind == "BOOLEAN":
        return text.lower() == "true"
    return None


def _top_level_predicates(node: dict[str, Any], out: Analysis, values: tuple[Any, ...]
                          ) -> None:
    if node.get("type") != "SELECT_NODE" or not node.get("from_table"):
        return
    if not _from_tables(node["from_table"], out.from_aliases):
        out.from_aliases.clear()
        return
    for term in _conjuncts(node.get("where_clause")):
        op = _OPS.get(term.get("type", ""))
        if op is None or term.get("class") != "COMPARISON":
            continue
        left, right = term.get("left", {}), term.get("right", {})
        if left.get("class") != "COLUMN_REF":
            left, right, op = right, left, _FLIP[op]
        value = _constant(right, values)
        names = left.get("column_names", []) if left.get("class") == "COLUMN_REF" else []
        if value is None or len(names) not in (1, 2):
            continue
        qualifier = names[0].lower() if len(names) == 2 else None
        out.predicates.append(Predicate(qualifier, names[-1], op, value))


def projection(analysis: Analysis, schema: pa.Schema) -> tuple[str, ...] | None:
    """The columns to read (``None``: all of them)."""
    if analysis.whole_rows:
        return None
    return tuple(n for n in schema.names if n.lower() in analysis.mentioned)


def _column_of(schema: pa.Schema, name: str) -> pa.Field | None:
    found = [f for f in schema if f.name.lower() == name.lower()]
    return found[0] if len(found) == 1 else None


def _condition(var: str, kind: str, op: str, value: bool | int | float | str) -> str | None:
    """``var op value`` for a column of OMERO type ``kind``, or None when not safely pushable."""
    if kind in cols.INTEGER_COLUMNS and type(value) is int:
        return f"({var} {op} {value!r})"
    if kind == cols.DOUBLE and type(value) in (int, float):
        if op in (">", ">="):
            return f"(({var} {op} {value!r}) | ({var} != {var}))"  # DuckDB: NaN > everything
        return f"({var} {op} {value!r})"
    if op in ("==", "!=") and ((kind == cols.STRING and type(value) is str)
                               or (kind == cols.BOOL and type(value) is bool)):
        return f"({var} {op} {value!r})"
    return None


def conditions(analysis: Analysis, table: str, schemas: dict[str, pa.Schema]
               ) -> tuple[str, dict[str, str]] | None:
    """A PyTables condition and its variables for ``table``'s read, or None."""
    if analysis.tables[table] != 1 or table not in analysis.from_aliases.values():
        return None
    mine = {alias for alias, name in analysis.from_aliases.items() if name == table}
    parts: list[str] = []
    variables: dict[str, str] = {}
    for p in analysis.predicates:
        if p.qualifier is not None:
            if p.qualifier not in mine:
                continue
        else:
            owners = [n for n in set(analysis.from_aliases.values())
                      if _column_of(schemas[n], p.column) is not None]
            if owners != [table]:
                continue
        f = _column_of(schemas[table], p.column)
        if f is None:
            continue
        var = f"x{len(parts)}"
        text = _condition(var, cols.column_type_of(f), p.op, p.value)
        if text is None:
            continue
        parts.append(text)
        variables[var] = f.name
    if not parts:
        return None
    return " & ".join(parts), variables
