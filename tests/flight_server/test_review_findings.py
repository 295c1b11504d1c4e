"""Findings of a hostile review after the hardening work, each as the behaviour it must have.

- Flight SQL table-name filters match in linear time (a backtracking regex froze the server);
- Flight SQL statement handles get the limits every request gets (typed, never internal);
- ``do_exchange`` is refused, typed (invalid_argument), without a traceback;
- uploads with invalid UTF-8 in string cells, NUL inside a string cell, or a column named
  ``.`` are refused with invalid_argument and leave nothing stored.
"""

from __future__ import annotations

import fnmatch
import json
import re

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flight_server.errors import InvalidArgument
from tests.flight_server.wire import action, error_code, upload


@pytest.fixture(scope="module")
def alice(connect):
    return connect("alice")


def _tables(conn) -> set[str]:
    return {t["name"] for t in action(*conn, "list_tables")["tables"]}


# -- Flight SQL filter patterns ------------------------------------------------------------

def _reference(pattern: str, text: str) -> bool:
    """LIKE through fnmatch (``%`` -> ``*``, ``_`` -> ``?``), for short strings only."""
    translated = "".join("*" if c == "%" else "?" if c == "_" else re.escape(c)
                         .replace("\\", "") if c not in "*?[]" else f"[{c}]" for c in pattern)
    return fnmatch.fnmatchcase(text, translated)


@given(st.text(alphabet="ab%_", max_size=8), st.text(alphabet="ab", max_size=10))
def test_like_matches_as_sql_like(pattern, text):
    from flight_server.sql.metadata import like_matches

    assert like_matches(pattern, text) == _reference(pattern, text)


def test_a_pathological_pattern_ends_at_once():
    """``%a%a...%b`` against 100,000 ``a``: quadratic at most, never exponential (a regex
    took 67 s with four ``%a`` against 1,000 characters; pytest's timeout would catch it)."""
    from flight_server.sql.metadata import like, like_matches

    assert like_matches("%a%a%a%a%a%a%a%a%b", "a" * 2_000) is False
    assert like_matches("%a%a%a%b", "a" * 100_000) is False
    with pytest.raises(InvalidArgument, match="1024"):
        like("%" * 2_000)


# -- Flight SQL statement handles --------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"v": 1, "sql": "select 1", "rows": [0, ' + b"9" * 5_000 + b"]}",
    b'{"v": 1, "sql": "\\ud800"}',
    b'{"v": true, "sql": "select 1"}',
    b'{"v": 1, "sql": "select 1", "extra": 1}',
    b'{"v": 1, "sql": "select 1", "values": [NaN]}',
])
def test_malformed_statement_handles_are_invalid_arguments(raw):
    from flight_server.sql.handles import Handle

    with pytest.raises(InvalidArgument):
        Handle.decode(raw)


# -- do_exchange ---------------------------------------------------------------------------------

def test_do_exchange_is_refused_typed_without_traceback(alice):
    client, options = alice
    descriptor = flight.FlightDescriptor.for_command(b"{}")
    with pytest.raises(flight.FlightError) as info:
        writer, reader = client.do_exchange(descriptor, options=options)
        with writer:
            writer.begin(pa.schema([("x", pa.int64())]))
            reader.read_chunk()
    assert error_code(info.value) == "invalid_argument", info.value
    assert "do_get" in str(info.value) and "Traceback" not in str(info.value)


# -- uploads -------------------------------------------------------------------------------------

def _invalid_utf8() -> pa.Array:
    offsets = pa.array([0, 2, 3], type=pa.int32()).buffers()[1]
    data = pa.py_buffer(b"\xff\xfeb")
    return pa.Array.from_buffers(pa.string(), 2, [None, offsets, data])


@pytest.mark.parametrize(("name", "table", "words"), [
    ("bad utf-8", lambda: pa.table({"s": _invalid_utf8()}), "invalid data"),
    ("nul in cell", lambda: pa.table({"s": ["a\x00b", "c"]}), "NUL"),
    ("dot column", lambda: pa.table({".": [1, 2]}), "'.'"),
])
def test_poisoned_uploads_are_refused_and_leave_nothing(alice, name, table, words):
    before = _tables(alice)
    with pytest.raises(flight.FlightError) as info:
        upload(*alice, table(), f"review {name}")
    assert error_code(info.value) == "invalid_argument", info.value
    assert words in json.loads(info.value.extra_info)["message"]
    assert _tables(alice) == before
