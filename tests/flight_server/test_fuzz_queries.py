"""Generated queries against a served store: the server survives, refusals are typed, no code runs.

Queries come from a grammar of the accepted syntax (the sample table's int,
float, string, bool and id columns, literals from INT64_MIN to INT64_MAX,
-1, 0, huge and tiny floats, variables with extreme values, every operator
and function, nesting) mixed with what is not accepted (other operators,
attributes, subscripts, calls that would run code and touch a canary file)
and with random text. Each case runs on the HDF5 and the TileDB copy of the
table through ``omero-flight serve`` in a child process, and must leave the
server alive, answer with rows or a typed Flight error whose JSON code is not
``internal``, never create the canary file, and give the same rows on both
formats when both answer.

CI runs a bounded number of cases; ``OMERO_FLIGHT_FUZZ_EXAMPLES=N`` runs N
per test (the long run in docs/fuzzing.md), and ``OMERO_FLIGHT_FUZZ_REPORT=path``
writes the counts of what happened as JSON when the module ends.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import pyarrow.flight as flight
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flight_server.query import FUNCTIONS
from tests.flight_server.test_query_safety import FORMATS, query_bridge  # noqa: F401
from tests.flight_server.wire import error_code

EXAMPLES = int(os.environ.get("OMERO_FLIGHT_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=EXAMPLES or 150,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
CANARY = Path(os.environ.get("OMERO_FLIGHT_FUZZ_CANARY",
                           f"/tmp/omero-flight-fuzz-canary-{os.getpid()}"))
OUTCOMES: Counter[str] = Counter()
REASONS: Counter[str] = Counter()

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
COLUMNS = ["a", "y", "s", "b", "Image"]
VARIABLES = {
    "m": INT64_MIN, "M": INT64_MAX, "n": -1, "z": 0, "one": 1, "f": 1e308, "g": -1e308,
    "t": 5e-324, "h": 0.5, "p": True, "q": False, "col": "s", "num": "a", "img": "Image",
}  # fmt: skip
EXTREME_INTS = [INT64_MIN, INT64_MIN + 1, INT64_MAX, 2**63, 2**64, -(2**64), -1, 0, 1, 2, 3,
                31, 32, 63, 64, 65, 2**31, -(2**31), 2**32, 123456789, 4294967296]
EXTREME_FLOATS = [0.0, -0.0, 0.5, -1.0, 1e308, -1e308, 1.7976931348623157e308, 5e-324,
                  2.2250738585072014e-308, 1e-300, 3.5, 1e16]
BINARY = ["+", "-", "*", "/", "%", "**", "&", "|", "^", "==", "!=", "<", "<=", ">", ">=",
          "and", "or", "//", "<<", ">>", "@", "in", "is", "not in"]
UNARY = ["-", "+", "~", "not "]
FORBIDDEN_CALLS = ["__import__", "eval", "exec", "open", "getattr", "sum", "max", "fmod",
                   "round", "where.__globals__", "type"]
PAYLOADS = [
    f"__import__('os').system('touch {CANARY}')",
    f"open('{CANARY}', 'w').write('x')",
    f"(lambda: __import__('pathlib').Path('{CANARY}').touch())()",
    f"a.__class__.__base__.__subclasses__()[0]('{CANARY}')",
    f"[c for c in ().__class__.__base__.__subclasses__()] and open('{CANARY}','w')",
    f"exec(\"open('{CANARY}','w')\")",
    f"a > 1; open('{CANARY}', 'w')",
    f"a > 1\nopen('{CANARY}', 'w')",
    f"@ open('{CANARY}','w')",
]


def literal_text(value: object) -> str:
    text = repr(value)
    return f"({text})" if text.startswith("-") else text


int_literals = st.one_of(st.sampled_from(EXTREME_INTS),
                         st.integers(min_value=-(2**65), max_value=2**65)).map(literal_text)
float_literals = st.one_of(st.sampled_from(EXTREME_FLOATS),
                           st.floats(allow_nan=False, allow_infinity=False)).map(literal_text)
string_literals = st.text(max_size=6).map(repr) | st.binary(max_size=4).map(repr)
leaves = st.one_of(
    st.sampled_from(COLUMNS),
    st.sampled_from(sorted(VARIABLES)),
    int_literals,
    float_literals,
    string_literals,
    st.sampled_from(["True", "False", "nope", "None", "inf", "nan", "1e999", "1j", "..."]),
)


def combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.tuples(children, st.sampled_from(BINARY), children, st.booleans()).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})" if t[3] else f"{t[0]} {t[1]} {t[2]}")
    unary = st.tuples(st.sampled_from(UNARY), children).map(lambda t: f"{t[0]}({t[1]})")
    name = st.sampled_from(sorted(FUNCTIONS) + FORBIDDEN_CALLS)
    call = st.tuples(name, st.lists(children, max_size=3)).map(
        lambda t: f"{t[0]}({', '.join(t[1])})")
    odd = st.tuples(children, st.sampled_from([".real", "[0]", ".imag", ".__class__", "()"])
                    ).map("".join)
    return st.one_of(binary, binary, unary, call, odd)


expressions = st.deferred(lambda: st.recursive(leaves, combine, max_leaves=25))
# A well-typed part of the grammar, so that most of these queries are evaluated.
NUMERIC_NAMES = ["a", "y", "Image", "m", "M", "n", "z", "one", "f", "g", "t", "h", "num", "img"]
ONE_ARGUMENT = sorted(FUNCTIONS - {"where", "contains", "arctan2"})
small_ints = st.integers(min_value=-3, max_value=70).map(literal_text)
numbers = st.deferred(lambda: st.one_of(
    st.sampled_from(NUMERIC_NAMES), st.sampled_from(NUMERIC_NAMES),
    int_literals, float_literals, small_ints,
    st.tuples(numbers, st.sampled_from(["+", "-", "*", "/", "%"]), numbers).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})"),
    st.tuples(numbers, st.one_of(small_ints, float_literals, st.sampled_from(NUMERIC_NAMES))
              ).map(lambda t: f"({t[0]} ** {t[1]})"),
    st.tuples(st.sampled_from(ONE_ARGUMENT), numbers).map(lambda t: f"{t[0]}({t[1]})"),
    st.tuples(numbers, numbers).map(lambda t: f"arctan2({t[0]}, {t[1]})"),
    st.tuples(typed, numbers, numbers).map(lambda t: f"where({t[0]}, {t[1]}, {t[2]})"),
    numbers.map(lambda x: f"(-{x})"),
))
typed = st.deferred(lambda: st.one_of(
    st.sampled_from(["b", "p", "q", "True", "False"]),
    st.tuples(numbers, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), numbers).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})"),
    st.tuples(st.sampled_from(["s", "col"]), st.sampled_from(["==", "!=", "<", ">="]),
              string_literals).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    st.tuples(st.sampled_from(["s", "col"]), string_literals).map(
        lambda t: f"contains({t[0]}, {t[1]})"),
    st.tuples(typed, st.sampled_from(["&", "|", "^", "and", "or"]), typed).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})"),
    typed.map(lambda x: f"~{x}"), typed.map(lambda x: f"(not {x})"),
))
conditions = st.one_of(
    typed, typed, typed,
    expressions,
    st.tuples(expressions, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
              expressions).map(lambda t: f"({t[0]}) {t[1]} ({t[2]})"),
    st.sampled_from(PAYLOADS),
)
variable_values = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64), st.floats(), st.booleans(),
    st.sampled_from(COLUMNS + ["no such column", ""]), st.none(),
    st.lists(st.integers(), max_size=2),
)
extra_variables = st.dictionaries(
    st.sampled_from(["k", "x1", "_v", "a", "1x", "a b", "__import__", ""]), variable_values,
    max_size=3)


def run_case(bridge, text: str, variables: dict) -> None:
    """Run one query on every format and check what the server did."""
    answers = {}
    for fmt in FORMATS:
        try:
            answers[fmt] = bridge.query(fmt, text, variables).column(0).to_pylist()
            OUTCOMES["rows"] += 1
        except flight.FlightError as exc:
            assert exc.extra_info, f"untyped error for {text!r}: {exc}"
            code = error_code(exc)
            OUTCOMES[code] += 1
            message = json.loads(exc.extra_info).get("message", "")
            REASONS[re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "_", message)[:70]] += 1
            assert code != "internal", f"{text!r} {variables!r}: {exc}"
        assert bridge.alive(), f"the server died on {text!r} {variables!r}"
        assert not CANARY.exists(), f"{text!r} created the canary file"
    OUTCOMES["cases"] += 1
    if OUTCOMES["cases"] % 1000 == 0:
        write_report()
    if len(answers) == len(FORMATS):
        assert answers["hdf5"] == answers["tiledb"], text


def write_report() -> None:
    path = os.environ.get("OMERO_FLIGHT_FUZZ_REPORT")
    if path:
        summary = {"outcomes": dict(OUTCOMES), "reasons": dict(REASONS.most_common(40))}
        Path(path).write_text(json.dumps(summary, indent=2) + "\n")


@pytest.fixture(scope="module", autouse=True)
def report():
    CANARY.unlink(missing_ok=True)
    yield
    assert not CANARY.exists()
    write_report()


@FUZZ
@given(text=conditions, variables=st.one_of(st.just({}), st.just({}), extra_variables))
def test_grammar_queries(query_bridge, text, variables):  # noqa: F811
    run_case(query_bridge, text, {**VARIABLES, **variables})


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=100).map(
    lambda b: b.decode("latin-1")), st.lists(st.sampled_from(
        COLUMNS + BINARY + UNARY + ["(", ")", "[", "]", ",", "'", '"', "\\", "1", "-1",
                                    "9223372036854775808", "1e308", "where", "**"]),
        max_size=60).map(" ".join)))
def test_random_text(query_bridge, text):  # noqa: F811
    run_case(query_bridge, text, dict(VARIABLES))
