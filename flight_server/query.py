"""PyTables conditions from untrusted users: parse, check against an allowlist, re-serialize.

OMERO.tables takes a PyTables condition string plus variables. PyTables hands
the string to numexpr, which has had code-execution holes from untrusted text
(CVE-2023-39631; its regex sanitizer was later bypassed), and PyTables looks up
unknown names in the caller's frames. So a query never reaches PyTables as
typed: it is parsed with :mod:`ast`, every node is checked against a small
grammar, every name must be a column of this table or a given variable, and
the expression is rebuilt from the tree with generated identifiers
(``c0``, ``v0``, ...) and an explicit ``condvars`` mapping for each of them.

Accepted: comparisons (``== != < <= > >=``, not chained), arithmetic
(``+ - * / % **``), boolean ``& | ~`` (``and``/``or``/``not`` are accepted and
written as ``& | ~``), parentheses, numbers, booleans, strings (compared with
string columns as UTF-8 bytes), and the numexpr functions in :data:`FUNCTIONS`.

Variables follow OMERO.tables: a string value names a column (useful for
column names that are not identifiers, e.g. ``"Roi Name"``); a number or a
boolean is a value.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_QUERY_LENGTH = 10_000
MAX_DEPTH = 40
MAX_NODES = 1_000
MAX_STRING_BYTES = 4_096

FUNCTIONS = frozenset(
    {
        "where", "sin", "cos", "tan", "arcsin", "arccos", "arctan", "arctan2",
        "sinh", "cosh", "tanh", "arcsinh", "arccosh", "arctanh", "log", "log10",
        "log1p", "exp", "expm1", "sqrt", "abs", "contains", "floor", "ceil",
    }
)  # fmt: skip

_BINOPS: dict[type, str] = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Mod: "%",
    ast.Pow: "**", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^",
}  # fmt: skip
_CMPOPS: dict[type, str] = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
}  # fmt: skip
_UNARY: dict[type, str] = {ast.USub: "-", ast.UAdd: "+", ast.Invert: "~", ast.Not: "~"}
_BOOLOPS: dict[type, str] = {ast.And: "&", ast.Or: "|"}

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INT64 = (-(2**63), 2**63 - 1)


class UnsafeQuery(ValueError):
    """A query that is not a safe condition over this table; the message says why."""


@dataclass(frozen=True)
class CheckedQuery:
    """A condition that passed the allowlist, ready for ``Table.get_where_list``.

    ``expression`` mentions only generated names, literals and allowed
    functions. ``columns`` maps generated names to table column names and
    ``values`` maps generated names to scalar values; together they are the
    complete ``condvars``.
    """

    expression: str
    columns: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    def condvars(self, column: Any) -> dict[str, Any]:
        """``condvars`` for PyTables, with ``column(name)`` giving a table column object."""
        out: dict[str, Any] = dict(self.values)
        out.update({k: column(name) for k, name in self.columns.items()})
        return out


class _Rewriter:
    def __init__(
        self,
        columns: Mapping[str, str],
        variables: Mapping[str, Any],
    ) -> None:
        self.table_columns = columns  # name -> OMERO column type
        self.variables = variables
        self.col_names: dict[str, str] = {}  # column name -> generated
        self.val_names: dict[str, Any] = {}  # generated -> value
        self.nodes = 0

    def column_ref(self, name: str) -> str:
        if name not in self.table_columns:
            raise UnsafeQuery(f"unknown column {name!r} in query")
        kind = self.table_columns[name].rsplit("::", 1)[-1]
        if kind.endswith("ArrayColumn") or kind == "MaskColumn":
            raise UnsafeQuery(f"column {name!r} is a {kind}, which a query cannot use")
        if name not in self.col_names:
            self.col_names[name] = f"c{len(self.col_names)}"
        return self.col_names[name]

    def value_ref(self, value: Any) -> str:
        key = f"v{len(self.val_names)}"
        self.val_names[key] = value
        return key

    def literal(self, value: Any) -> str:
        if isinstance(value, bool):
            return "True" if value else "False"
        if isinstance(value, int):
            if not _INT64[0] <= value <= _INT64[1]:
                raise UnsafeQuery(f"integer {value} is out of the 64-bit range")
            return repr(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise UnsafeQuery("only finite numbers may appear in a query")
            return repr(value)
        if isinstance(value, (str, bytes)):
            data = value.encode("utf-8") if isinstance(value, str) else value
            if len(data) > MAX_STRING_BYTES:
                raise UnsafeQuery(f"string literal longer than {MAX_STRING_BYTES} bytes")
            return self.value_ref(data)
        raise UnsafeQuery(f"literal {value!r} of type {type(value).__name__} is not allowed")

    def name(self, ident: str) -> str:
        if ident in self.variables:
            value = self.variables[ident]
            if isinstance(value, str):
                return self.column_ref(value)
            if isinstance(value, (bool, int, float)):
                return self.value_ref(self._checked_scalar(ident, value))
            raise UnsafeQuery(f"variable {ident!r} must be a number, a boolean or a column name")
        if ident in self.table_columns:
            return self.column_ref(ident)
        if ident in ("True", "False"):
            return ident
        raise UnsafeQuery(f"unknown name {ident!r}: not a column of this table nor a variable")

    def _checked_scalar(self, ident: str, value: bool | int | float) -> bool | int | float:
        if isinstance(value, float) and not math.isfinite(value):
            raise UnsafeQuery(f"variable {ident!r} must be finite")
        if isinstance(value, int) and not isinstance(value, bool):
            if not _INT64[0] <= value <= _INT64[1]:
                raise UnsafeQuery(f"variable {ident!r} is out of the 64-bit range")
        return value

    def visit(self, node: ast.AST, depth: int = 0) -> str:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise UnsafeQuery(f"query has more than {MAX_NODES} parts")
        if depth > MAX_DEPTH:
            raise UnsafeQuery(f"query nests deeper than {MAX_DEPTH} levels")
        d = depth + 1
        if isinstance(node, ast.Expression):
            return self.visit(node.body, d)
        if isinstance(node, ast.Constant):
            return self.literal(node.value)
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = self.visit(node.left, d), self.visit(node.right, d)
            return f"({left} {_BINOPS[type(node.op)]} {right})"
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return f"({_UNARY[type(node.op)]}{self.visit(node.operand, d)})"
        if isinstance(node, ast.BoolOp) and type(node.op) in _BOOLOPS:
            op = f" {_BOOLOPS[type(node.op)]} "
            return "(" + op.join(self.visit(v, d) for v in node.values) + ")"
        if isinstance(node, ast.Compare):
            if len(node.ops) != 1:
                raise UnsafeQuery("chained comparisons are not supported: write (a < b) & (b < c)")
            op = type(node.ops[0])
            if op not in _CMPOPS:
                raise UnsafeQuery(f"comparison {op.__name__} is not allowed")
            left = self.visit(node.left, d)
            right = self.visit(node.comparators[0], d)
            return f"({left} {_CMPOPS[op]} {right})"
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                what = node.func.id if isinstance(node.func, ast.Name) else "this expression"
                raise UnsafeQuery(f"function {what!r} is not allowed in a query")
            if node.keywords:
                raise UnsafeQuery("keyword arguments are not allowed in a query")
            args = ", ".join(self.visit(a, d) for a in node.args)
            return f"{node.func.id}({args})"
        raise UnsafeQuery(f"{type(node).__name__} is not allowed in a query")


def check_query(
    text: str,
    columns: Mapping[str, str] | Sequence[str],
    variables: Mapping[str, Any] | None = None,
) -> CheckedQuery:
    """Check a condition against a table's columns (name -> OMERO type id, or just names).

    Raises :class:`UnsafeQuery` naming the first thing that is not allowed.
    """
    if not isinstance(text, str) or not text.strip():
        raise UnsafeQuery("the query is empty")
    if len(text) > MAX_QUERY_LENGTH:
        raise UnsafeQuery(f"the query is longer than {MAX_QUERY_LENGTH} characters")
    if not isinstance(columns, Mapping):
        columns = {c: "::omero::grid::LongColumn" for c in columns}
    variables = dict(variables or {})
    for name in variables:
        if not isinstance(name, str) or not _IDENT.match(name):
            raise UnsafeQuery(f"variable name {name!r} is not a plain identifier")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise UnsafeQuery(f"the query is not a valid condition: {exc.msg}") from None
    rewriter = _Rewriter(columns, variables)
    expression = rewriter.visit(tree)
    return CheckedQuery(
        expression=expression,
        columns={v: k for k, v in rewriter.col_names.items()},
        values=rewriter.val_names,
        source=text,
    )
