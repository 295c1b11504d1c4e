"""PyTables conditions from untrusted users: parse, check, type and rewrite into a safe form.

OMERO.tables takes a PyTables condition string plus variables. PyTables hands
the string to numexpr, which has had code-execution holes from untrusted text
(CVE-2023-39631; its regex sanitizer was later bypassed), and PyTables looks up
unknown names in the caller's frames. So a query never reaches PyTables as
typed: it is parsed with :mod:`ast`, every node is checked against a small
grammar and typed, every name must be a column of this table or a given
variable, and the expression is rebuilt from the tree with generated
identifiers (``c0``, ``v0``, ...) and an explicit ``condvars`` mapping for each
of them. The same rebuilt expression is what the bridge evaluates with
PyTables/numexpr and what it forwards to OMERO.tables, so both are equally safe.

Grammar (everything else is refused):

* comparisons ``== != < <= > >=`` (one per comparison: ``(a < b) & (b < c)``,
  not ``a < b < c``); strings compare only with strings;
* arithmetic ``+ - * / % **`` and unary ``- +`` on numbers and booleans;
* ``& | ^ ~`` (``and or not`` are accepted and written as ``& | ~``): logical
  on conditions, bitwise on integers;
* parentheses; integer literals in the signed 64-bit range (``-9223372036854775808``
  included), finite float literals, ``True``/``False``, string literals
  (compared with string columns as UTF-8 bytes);
* this table's columns (not array or mask columns) and the given variables:
  a string variable names a column (as in OMERO.tables, e.g. ``"Roi Name"``),
  a number or a boolean is a value;
* the functions in :data:`FUNCTIONS` with their numexpr arities.

What cannot trap or explode, by construction:

* numexpr's integer ``%`` traps (SIGFPE, the process dies) on
  ``INT64_MIN % -1``. Integer ``%`` is therefore written with a divisor that
  is never ``0`` or ``-1``: a known divisor (literal or variable) in
  ``{0, -1}`` becomes ``1``, any other integer divisor ``d`` becomes
  ``where((d == 0) | (d == -1), 1, d)``. ``x % 1`` and ``x % -1`` are both 0,
  and numexpr answers 0 for ``x % 0``, so answers do not change. ``/`` is
  true division (floating point) and cannot trap.
* ``**`` takes only an exponent known when the query is checked (a literal,
  a constant expression or a variable), of magnitude at most
  :data:`MAX_EXPONENT`; an integer to a negative integer power is refused
  (numexpr's integer power divides by the base).
* numexpr folds constant sub-expressions with Python arithmetic, unbounded
  (``a > 3 ** 30000000`` takes the GIL for seconds, ``2147483648 ** 4294967296``
  for ever). Here every sub-expression made of literals only is folded by the
  checker with limits (integers stay in 64 bits, floats stay finite, no
  division by zero, powers are bounded before they are computed), so numexpr
  never sees two literals under one operator. A literal divisor of ``/`` and
  the exponent of ``**`` are passed as variables: with literals there, numexpr
  rewrites ``x / c`` into ``x * (1 / c)`` (folded in Python: ``1 / 0`` raises)
  and ``x ** c`` into multiplications or ``sqrt``, depending on an
  optimization level that differs between ``numexpr.evaluate`` and PyTables,
  so the same query could give different rows on HDF5 and TileDB tables.
  A literal 0 divisor of ``/`` is refused. Literals of ``& | ^`` are written
  last (numexpr has no reflected ``&``), and ``-`` of a boolean as ``0 - x``.
* The text is checked before :func:`ast.parse` (length, bracket depth and
  number of operators), so the parser cannot run out of stack; whatever the
  parser still raises is a refusal. The tree is limited in depth and parts,
  chains of ``&``/``|`` are rebuilt as balanced trees (shallow for numexpr
  and PyTables), and the rebuilt text is limited in length.
* A query must be a condition (boolean) that uses at least one column.

Every refusal is :class:`UnsafeQuery` (``invalid_argument`` on the wire) and
says what was not allowed. Evaluation itself is done by the store in chunks
of rows, so one query holds a lock for one chunk at a time.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_QUERY_LENGTH = 10_000
#: Parenthesis depth of the text and depth of the parsed tree.
MAX_DEPTH = 40
MAX_NODES = 1_000
#: Operator characters and keywords in the text (checked before parsing).
MAX_OPERATORS = 1_000
MAX_STRING_BYTES = 4_096
#: Largest magnitude of an exponent of ``**``.
MAX_EXPONENT = 64
#: Longest rebuilt expression (guards around ``%`` repeat the divisor).
MAX_EXPRESSION_LENGTH = 40_000

FUNCTIONS = frozenset(
    {
        "where", "sin", "cos", "tan", "arcsin", "arccos", "arctan", "arctan2",
        "sinh", "cosh", "tanh", "arcsinh", "arccosh", "arctanh", "log", "log10",
        "log1p", "exp", "expm1", "sqrt", "abs", "contains", "floor", "ceil",
    }
)  # fmt: skip
_ARITY = {"where": 3, "arctan2": 2, "contains": 2}

_ARITH: dict[type, str] = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Mod: "%", ast.Pow: "**",
}  # fmt: skip
_LOGIC: dict[type, str] = {ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^"}
_CMPOPS: dict[type, str] = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
}  # fmt: skip
_BOOLOPS: dict[type, str] = {ast.And: "&", ast.Or: "|"}

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INT64 = (-(2**63), 2**63 - 1)
_OPERATOR_CHARS = frozenset("+-*/%&|^~<>=!")
_KEYWORDS = re.compile(r"\b(?:not|and|or)\b")

# Kinds, as numexpr types them: booleans, integers, floats, byte strings.
BOOL, INT, FLOAT, BYTES = "bool", "int", "float", "bytes"


class UnsafeQuery(ValueError):
    """A query that is not a safe condition over this table; the message says why."""


@dataclass(frozen=True)
class CheckedQuery:
    """A condition that passed the checks, ready for ``Table.get_where_list``.

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


@dataclass(frozen=True)
class _Term:
    """A checked sub-expression: its text, its kind, and its value when known.

    ``const`` terms are made of literals only and are folded (their text is
    written when they meet a non-constant term). A bare numeric variable is not
    constant for numexpr, but its ``value`` is known to the checker.
    """

    kind: str
    text: str = ""
    const: bool = False
    value: Any = None
    known: bool = False


def _refuse_big_int(value: int) -> int:
    if not _INT64[0] <= value <= _INT64[1]:
        raise UnsafeQuery(f"integer {_short(value)} is out of the 64-bit range")
    return value


def _short(value: Any) -> str:
    text = str(value) if not isinstance(value, int) or abs(value) < 10**40 else "too large"
    return text if len(text) <= 40 else text[:37] + "..."


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return FLOAT
    if isinstance(value, bytes):
        return BYTES
    raise UnsafeQuery(f"a value of type {type(value).__name__} cannot appear in a query")


def _checked_value(value: Any) -> _Term:
    """A folded constant, if it is one numexpr can take as it is."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, int) and not isinstance(value, bool):
        _refuse_big_int(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise UnsafeQuery("a constant in the query is not a finite number (overflow, "
                          "or a function outside its domain)")
    return _Term(_kind_of(value), const=True, value=value, known=True)


def _power(a: Any, b: Any) -> Any:
    if isinstance(b, int) and isinstance(a, int):
        if b < 0 and a == 0:
            raise UnsafeQuery("0 to a negative power in the query")
        if b > 0 and abs(a) > 1 and b * (abs(a).bit_length() - 1) > 64:
            raise UnsafeQuery("a power in the query is out of the 64-bit range")
    return a**b


_FOLD: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": lambda a, b: a / b, "%": lambda a, b: a % b, "**": _power,
    "&": lambda a, b: a & b, "|": lambda a, b: a | b, "^": lambda a, b: a ^ b,
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}  # fmt: skip
_NUMPY_FUNCTIONS = {name: getattr(np, name) for name in FUNCTIONS - {"where", "contains"}}


def _fold(op: str, a: Any, b: Any) -> _Term:
    if op in ("/", "%") and b == 0:
        raise UnsafeQuery(f"{'division' if op == '/' else 'modulo'} by zero in the query")
    try:
        value = _FOLD[op](a, b)
    except UnsafeQuery:
        raise
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise UnsafeQuery(f"the constant part {_short(a)} {op} {_short(b)} of the query "
                          f"cannot be computed: {type(exc).__name__}") from None
    if isinstance(value, complex):
        raise UnsafeQuery(f"{_short(a)} {op} {_short(b)} is not a real number")
    return _checked_value(value)


def _literal(term: _Term) -> str:
    value = term.value
    if isinstance(value, bool):
        return "True" if value else "False"
    text = repr(value)
    return f"({text})" if text.startswith("-") else text


def _prescan(text: str) -> None:
    """Bound bracket depth and operator count on the raw text, before the parser sees it."""
    depth = operators = 0
    quote = ""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif text.startswith(quote, i):
                i += len(quote) - 1
                quote = ""
        elif ch in "'\"":
            quote = ch * 3 if text.startswith(ch * 3, i) else ch
            i += len(quote) - 1
        elif ch in "([{":
            depth += 1
            if depth > MAX_DEPTH:
                raise UnsafeQuery(f"query nests deeper than {MAX_DEPTH} brackets")
        elif ch in ")]}":
            depth -= 1
        elif ch in _OPERATOR_CHARS:
            operators += 1
        i += 1
    operators += len(_KEYWORDS.findall(text))
    if operators > MAX_OPERATORS:
        raise UnsafeQuery(f"query has more than {MAX_OPERATORS} operators")


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

    # -- leaves -------------------------------------------------------------------------

    def column_ref(self, name: str) -> _Term:
        if name not in self.table_columns:
            raise UnsafeQuery(f"unknown column {_short(repr(name))} in query")
        kind = self.table_columns[name].rsplit("::", 1)[-1]
        if kind.endswith("ArrayColumn") or kind == "MaskColumn":
            raise UnsafeQuery(f"column {name!r} is a {kind}, which a query cannot use")
        if name not in self.col_names:
            self.col_names[name] = f"c{len(self.col_names)}"
        if kind == "StringColumn":
            typed = BYTES
        elif kind == "DoubleColumn":
            typed = FLOAT
        elif kind == "BoolColumn":
            typed = BOOL
        else:  # LongColumn and the id columns (ImageColumn, RoiColumn, ...)
            typed = INT
        return _Term(typed, self.col_names[name])

    def value_ref(self, value: Any) -> str:
        key = f"v{len(self.val_names)}"
        self.val_names[key] = value
        return key

    def constant(self, value: Any) -> _Term:
        if isinstance(value, (str, bytes)):
            data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
            if len(data) > MAX_STRING_BYTES:
                raise UnsafeQuery(f"string literal longer than {MAX_STRING_BYTES} bytes")
            return _Term(BYTES, const=True, value=data, known=True)
        if isinstance(value, (bool, int, float)):
            return _checked_value(value)
        raise UnsafeQuery(f"literal {_short(repr(value))} of type {type(value).__name__} "
                          "is not allowed")

    def name(self, ident: str) -> _Term:
        if ident in self.variables:
            value = self.variables[ident]
            if isinstance(value, str):
                return self.column_ref(value)
            if isinstance(value, (bool, int, float)):
                value = self._checked_scalar(ident, value)
                return _Term(_kind_of(value), self.value_ref(value), value=value, known=True)
            raise UnsafeQuery(f"variable {ident!r} must be a number, a boolean or a column name")
        if ident in self.table_columns:
            return self.column_ref(ident)
        raise UnsafeQuery(f"unknown name {_short(repr(ident))}: not a column of this table "
                          "nor a variable")

    def _checked_scalar(self, ident: str, value: bool | int | float) -> bool | int | float:
        if isinstance(value, float) and not math.isfinite(value):
            raise UnsafeQuery(f"variable {ident!r} must be finite")
        if isinstance(value, int) and not isinstance(value, bool):
            if not _INT64[0] <= value <= _INT64[1]:
                raise UnsafeQuery(f"variable {ident!r} is out of the 64-bit range")
        return value

    def text(self, term: _Term) -> str:
        """The term as numexpr source: folded constants as literals, strings as variables."""
        if not term.const:
            return term.text
        if term.kind == BYTES:
            return self.value_ref(term.value)
        return _literal(term)

    def made(self, kind: str, text: str) -> _Term:
        if len(text) > MAX_EXPRESSION_LENGTH:
            raise UnsafeQuery(f"the checked query would be longer than {MAX_EXPRESSION_LENGTH} "
                              "characters")
        return _Term(kind, text)

    # -- operators ----------------------------------------------------------------------

    @staticmethod
    def numeric(op: str, *terms: _Term) -> None:
        if any(t.kind == BYTES for t in terms):
            raise UnsafeQuery(f"strings cannot be used with {op!r}: they can only be compared "
                              "(== != < <= > >=) or searched with contains()")

    def arith(self, op: str, left: _Term, right: _Term) -> _Term:
        self.numeric(op, left, right)
        if left.const and right.const:
            return _fold(op, left.value, right.value)
        integers = left.kind != FLOAT and right.kind != FLOAT
        kind = FLOAT if op == "/" or not integers else INT
        if op == "/" and right.const:
            if right.value == 0:
                raise UnsafeQuery("division by zero in the query")
            # a variable, not a literal: numexpr would fold x / c into x * (1 / c), in Python
            return self.made(kind, f"({self.text(left)} / {self.value_ref(right.value)})")
        if op == "%" and integers:
            return self.made(kind, f"({self.text(left)} % {self.safe_divisor(right)})")
        if op == "**":
            return self.power(left, right)
        return self.made(kind, f"({self.text(left)} {op} {self.text(right)})")

    def safe_divisor(self, divisor: _Term) -> str:
        """An integer divisor that is never 0 or -1 (``INT64_MIN % -1`` traps in numexpr)."""
        if divisor.known:
            return "1" if divisor.value in (0, -1) else self.text(divisor)
        d = divisor.text
        return f"where(({d} == 0) | ({d} == -1), 1, {d})"

    def power(self, base: _Term, exponent: _Term) -> _Term:
        if not exponent.known:
            raise UnsafeQuery("the exponent of ** must be a number known when the query is "
                              "checked (a literal or a variable), not a column expression")
        e = exponent.value
        if abs(e) > MAX_EXPONENT:
            raise UnsafeQuery(f"exponent {_short(e)} is larger than {MAX_EXPONENT}")
        integers = base.kind != FLOAT and exponent.kind != FLOAT
        if integers and e < 0:
            raise UnsafeQuery("an integer to a negative integer power: write the exponent "
                              "as a float (e.g. x ** -1.0)")
        kind = INT if integers else FLOAT
        # The exponent is passed as a variable: with a literal, numexpr rewrites ** as
        # multiplications or sqrt depending on its optimization level, which differs between
        # numexpr.evaluate and PyTables (and between threads), and answers could differ.
        power = exponent.text if not exponent.const else self.value_ref(exponent.value)
        return self.made(kind, f"({self.text(base)} ** {power})")

    def logic(self, op: str, terms: list[_Term]) -> _Term:
        self.numeric(op, *terms)
        if all(t.const for t in terms):
            value = terms[0].value
            for t in terms[1:]:
                value = _fold(op, value, t.value).value
            return _checked_value(value)
        if any(t.kind == FLOAT for t in terms):
            raise UnsafeQuery(f"{op!r} combines conditions or integers, not floats")
        kind = BOOL if all(t.kind == BOOL for t in terms) else INT
        if any(t.const for t in terms):  # numexpr has no reflected & | ^: constants go last
            consts = [t for t in terms if t.const]
            value = consts[0].value
            for t in consts[1:]:
                value = _fold(op, value, t.value).value
            terms = [t for t in terms if not t.const] + [_checked_value(value)]
        return self.made(kind, self.balanced(op, [self.text(t) for t in terms]))

    def balanced(self, op: str, texts: list[str]) -> str:
        if len(texts) == 1:
            return texts[0]
        mid = len(texts) // 2
        return f"({self.balanced(op, texts[:mid])} {op} {self.balanced(op, texts[mid:])})"

    def compare(self, op: str, left: _Term, right: _Term) -> _Term:
        if (left.kind == BYTES) != (right.kind == BYTES):
            raise UnsafeQuery("a string can only be compared with a string column or literal")
        if left.const and right.const:
            return _fold(op, left.value, right.value)
        return self.made(BOOL, f"({self.text(left)} {op} {self.text(right)})")

    def unary(self, node: ast.UnaryOp, d: int) -> _Term:
        if isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            value = node.operand.value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.nodes += 1
                return self.constant(-value)  # -9223372036854775808 is a 64-bit literal
        term = self.visit(node.operand, d)
        if isinstance(node.op, (ast.USub, ast.UAdd)):
            self.numeric("-", term)
            sign = "-" if isinstance(node.op, ast.USub) else "+"
            if term.const:
                value = -term.value if sign == "-" else +term.value
                return _checked_value(value)
            if term.kind == BOOL:  # numexpr has no negation of booleans
                return self.made(INT, f"(0 {sign} {term.text})")
            return self.made(FLOAT if term.kind == FLOAT else INT, f"({sign}{term.text})")
        if isinstance(node.op, (ast.Invert, ast.Not)):
            if term.kind not in (BOOL, INT):
                raise UnsafeQuery("~ (not) applies to conditions and integers")
            if term.const:
                return _checked_value(not term.value if term.kind == BOOL else ~term.value)
            return self.made(term.kind, f"(~{term.text})")
        raise UnsafeQuery(f"{type(node.op).__name__} is not allowed in a query")

    def call(self, node: ast.Call, d: int) -> _Term:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            what = node.func.id if isinstance(node.func, ast.Name) else "this expression"
            raise UnsafeQuery(f"function {_short(repr(what))} is not allowed in a query")
        name = node.func.id
        if node.keywords:
            raise UnsafeQuery("keyword arguments are not allowed in a query")
        arity = _ARITY.get(name, 1)
        if len(node.args) != arity:
            raise UnsafeQuery(f"{name}() takes {arity} argument{'s' if arity > 1 else ''}")
        args = [self.visit(a, d) for a in node.args]
        if name == "contains":
            if any(a.kind != BYTES for a in args):
                raise UnsafeQuery("contains() takes two strings")
            if all(a.const for a in args):
                return _checked_value(args[1].value in args[0].value)
            return self.made(BOOL, f"contains({self.text(args[0])}, {self.text(args[1])})")
        self.numeric(f"{name}()", *args)
        if name == "where":
            cond, yes, no = args
            if cond.kind != BOOL:
                raise UnsafeQuery("the first argument of where() must be a condition")
            if cond.const:
                return yes if cond.value else no
            kind = FLOAT if FLOAT in (yes.kind, no.kind) else (
                BOOL if yes.kind == no.kind == BOOL else INT)
            return self.made(kind, f"where({cond.text}, {self.text(yes)}, {self.text(no)})")
        if all(a.const for a in args):
            with np.errstate(all="ignore"):
                return _checked_value(_NUMPY_FUNCTIONS[name](*[a.value for a in args]))
        kind = (INT if args[0].kind != FLOAT else FLOAT) if name == "abs" else FLOAT
        return self.made(kind, f"{name}({', '.join(self.text(a) for a in args)})")

    # -- the tree -----------------------------------------------------------------------

    def chain(self, node: ast.AST, op: type) -> list[ast.AST]:
        """Operands of a left-nested chain ``a | b | c`` (one level of nesting, not n)."""
        parts: list[ast.AST] = []
        while isinstance(node, ast.BinOp) and isinstance(node.op, op):
            parts.append(node.right)
            node = node.left
            self.nodes += 1
        parts.append(node)
        return parts[::-1]

    def visit(self, node: ast.AST, depth: int = 0) -> _Term:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise UnsafeQuery(f"query has more than {MAX_NODES} parts")
        if depth > MAX_DEPTH:
            raise UnsafeQuery(f"query nests deeper than {MAX_DEPTH} levels")
        d = depth + 1
        if isinstance(node, ast.Expression):
            return self.visit(node.body, d)
        if isinstance(node, ast.Constant):
            return self.constant(node.value)
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
            left, right = self.visit(node.left, d), self.visit(node.right, d)
            return self.arith(_ARITH[type(node.op)], left, right)
        if isinstance(node, ast.BinOp) and type(node.op) in _LOGIC:
            op = type(node.op)
            parts = self.chain(node, op) if op is not ast.BitXor else [node.left, node.right]
            return self.logic(_LOGIC[op], [self.visit(p, d) for p in parts])
        if isinstance(node, ast.UnaryOp):
            return self.unary(node, d)
        if isinstance(node, ast.BoolOp) and type(node.op) in _BOOLOPS:
            return self.logic(_BOOLOPS[type(node.op)], [self.visit(v, d) for v in node.values])
        if isinstance(node, ast.Compare):
            if len(node.ops) != 1:
                raise UnsafeQuery("chained comparisons are not supported: write (a < b) & (b < c)")
            cmp: type[ast.cmpop] = type(node.ops[0])
            if cmp not in _CMPOPS:
                raise UnsafeQuery(f"comparison {cmp.__name__} is not allowed")
            left = self.visit(node.left, d)
            right = self.visit(node.comparators[0], d)
            return self.compare(_CMPOPS[cmp], left, right)
        if isinstance(node, ast.Call):
            return self.call(node, d)
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
            raise UnsafeQuery(f"variable name {_short(repr(name))} is not a plain identifier")
    _prescan(text)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise UnsafeQuery(f"the query is not a valid condition: {_short(exc.msg)}") from None
    except (RecursionError, MemoryError, ValueError, OverflowError) as exc:
        raise UnsafeQuery(f"the query cannot be parsed ({type(exc).__name__}): it nests too "
                          "deep, or holds a number too long or text that is not valid "
                          "Unicode") from None
    rewriter = _Rewriter(columns, variables)
    try:
        term = rewriter.visit(tree)
    except RecursionError:
        raise UnsafeQuery(f"query nests deeper than {MAX_DEPTH} levels") from None
    if term.kind != BOOL:
        raise UnsafeQuery("the query must be a condition (true or false for each row), "
                          f"not a {term.kind} value")
    if term.const or not rewriter.col_names:
        raise UnsafeQuery("the query must use at least one column of the table"
                          + (" (it is constant)" if term.const else ""))
    return CheckedQuery(
        expression=rewriter.text(term),
        columns={v: k for k, v in rewriter.col_names.items()},
        values=rewriter.val_names,
        source=text,
    )
