"""Fuzzing the wire protocol: hostile tickets, descriptors, action bodies, upload names and
schemas, sent to a real server in its own process.

After every case: the server process is alive and answers, every refusal is a typed
Flight error whose code is not ``internal`` (for ``get_schema``, whose errors pyarrow
does not type, the bridge's JSON code in the text), and the canary file that hostile
strings try to create does not exist.

CI runs a bounded number of cases per test; ``OMERO_FLIGHT_FUZZ_EXAMPLES=N`` runs N per
test (a long run also needs ``--timeout=0``: pytest-timeout's 300 s is per test, and one
test runs all its cases). See docs/fuzzing.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flight_protocol.messages import (
    ACTION_FILE_INFO,
    ACTION_LIST_TABLES,
    ACTION_TABLE_COLUMNS,
    ACTION_TABLE_SIZE,
    MAX_NUMBER_DIGITS,
    META_COLUMN_TYPE,
    META_DESCRIPTION,
    META_STRING_SIZE,
    UploadDescriptor,
)

EXAMPLES = int(os.environ.get("OMERO_FLIGHT_FUZZ_EXAMPLES", "60"))
ROOT = Path(__file__).resolve().parents[2]

SERVER = """
import sys
from pathlib import Path
from tests.conftest import seed_store
from flight_server.service import FlightService
from flight_server.auth import SignInThrottle
store = seed_store(Path(sys.argv[1]))
server = FlightService(store, "grpc://127.0.0.1:0",
                       sign_in_throttle=SignInThrottle(free=10**9))
print(server.url, flush=True)
server.serve()
"""


@dataclass
class Target:
    proc: subprocess.Popen
    client: flight.FlightClient
    options: flight.FlightCallOptions
    canary: Path
    table_id: int
    annotation_id: int
    cases: int = 0


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    folder = tmp_path_factory.mktemp("fuzz")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(folder / "store")], cwd=folder,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("grpc://"), "the fuzz server did not start"
        client = flight.FlightClient(url)
        from tests.conftest import PASSWORDS
        header = client.authenticate_basic_token("alice", PASSWORDS["alice"])
        options = flight.FlightCallOptions(headers=[header], timeout=60)
        data = pa.table({"x": [1, 2, 3], "name": ["a", "b", "c"]})
        writer, reader = client.do_put(
            flight.FlightDescriptor.for_command(UploadDescriptor("fuzz", (("Image", 1),))
                                                .encode()), data.schema, options=options)
        with writer:
            writer.write_table(data)
            writer.done_writing()
            answer = json.loads(reader.read().to_pybytes())
        target = Target(proc, client, options, folder / "CANARY", answer["file_id"],
                        answer["annotation_id"])
        yield target
        report = os.environ.get("OMERO_FLIGHT_FUZZ_REPORT")
        if report:  # a long run records how many cases were checked
            with open(report, "a") as fh:
                fh.write(json.dumps({"cases": target.cases, "examples_per_test": EXAMPLES,
                                     "server_alive": proc.poll() is None}) + "\n")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# -- what a hostile client sends --------------------------------------------------------------

CANARY_TEXTS = [
    "__import__('os').system('touch CANARY')",
    "$(touch CANARY)", "`touch CANARY`", "; touch CANARY", "../../../../CANARY",
    "open('CANARY', 'w')", "{{7*7}}", "%s%s%n", "x\0y", "\ud800", "\udfff\ud800",
    "a" * 5000, "é" * 300, "\u202e", "'; DROP TABLE users; --",
]
hostile_ints = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, -(2**63),
                     -(2**63) - 1, 2**64, 10**30, 10**300]),
)
hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=4),
    st.sampled_from(CANARY_TEXTS),
    st.text(alphabet="0123456789\u0660\u0661\u06f1\u0966\uff11 -+.eE", max_size=30),
)
scalars = st.one_of(st.none(), st.booleans(), hostile_ints,
                    st.floats(allow_nan=False, allow_infinity=False), hostile_text)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(hostile_text, inner, max_size=5)),
    max_leaves=20,
)
FIELDS = ["v", "kind", "file_id", "annotation_id", "columns", "rows", "query", "variables",
          "chunk_size", "row_numbers", "check_type", "name", "links", "description", "format",
          "mimetype", "explicit_commit", "object_type", "object_id", "start", "stop"]
KINDS = ["table", "file", "upload", "file_upload", "TABLE", "", "x"]


def dumps(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=True).encode()


@st.composite
def mutated_messages(draw) -> bytes:
    """A valid-looking message with a few fields replaced, added or removed."""
    target_id = draw(st.sampled_from(["table", "annotation", "random"]))
    base: dict[str, object] = {"v": 1, "kind": draw(st.sampled_from(KINDS))}
    if target_id == "table":
        base["file_id"] = 1
    elif target_id == "annotation":
        base["annotation_id"] = 500
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.one_of(st.sampled_from(FIELDS), hostile_text))
        if draw(st.booleans()):
            base[key] = draw(json_values)
        else:
            base.pop(key, None)
    if draw(st.booleans()):
        base["rows"] = draw(st.one_of(
            st.lists(hostile_ints, max_size=10),
            st.fixed_dictionaries({"start": json_values, "stop": json_values}),
            st.fixed_dictionaries({"int64_le_hex": st.one_of(json_values, packed_text())}),
            st.fixed_dictionaries({"int64_le_hex": packed_text(), "start": json_values})))
    return dumps(base)


@st.composite
def packed_text(draw) -> str:
    """A row list's packed form, well made or not: any bytes (any length, negative or huge
    int64s) in hex, or text that is not hex at all."""
    text = draw(st.binary(max_size=80)).hex()
    return draw(st.sampled_from([text, text[1:], text + "g", text.upper(), " " + text,
                                 "\u00e9" + text, ""]))


@st.composite
def raw_messages(draw) -> bytes:
    """Bytes that are hardly JSON at all: deep nests, huge numbers, bad UTF-8, noise."""
    choice = draw(st.integers(0, 5))
    if choice == 0:
        depth = draw(st.integers(1, 200_000))
        return b'{"v":1,"kind":"table","file_id":1,"variables":' + b"[" * depth \
            + b"]" * draw(st.sampled_from([depth, 0, depth // 2])) + b"}"
    if choice == 1:
        digits = draw(st.integers(MAX_NUMBER_DIGITS - 2, 20_000))
        field = draw(st.sampled_from(["file_id", "chunk_size", "v", "annotation_id"]))
        sign = draw(st.sampled_from(["", "-"]))
        number = draw(st.sampled_from(["9" * digits, "1." + "1" * digits, "1e" + "9" * digits]))
        return f'{{"v":1,"kind":"table","{field}":{sign}{number}}}'.encode() \
            if field != "v" else f'{{"v":{number},"kind":"table","file_id":1}}'.encode()
    if choice == 2:
        return draw(st.binary(max_size=200))
    if choice == 3:
        text = draw(hostile_text)
        return b'{"v":1,"kind":"table","file_id":1,"query":"' + text.encode(
            "utf-8", "surrogatepass") + b'"}'
    if choice == 4:
        n = draw(st.sampled_from([10, 1000, 100_000]))
        return b'{"v":1,"kind":"table","file_id":1,"rows":[' + b",".join(
            [b"1"] * n) + b"]}"
    return draw(st.sampled_from([b"", b"null", b"[]", b"1", b'"v"', b"{}", b'{"v":1}',
                                 b'{"v":1,"kind":null}', b'{"v":NaN}', b'{"v":Infinity}',
                                 b"\xef\xbb\xbf{}", b'{"v":1,"v":2}']))


messages = st.one_of(mutated_messages(), raw_messages())


# -- the checks after every case ---------------------------------------------------------------

def error_code(exc: BaseException) -> str:
    """The bridge's code for a refusal; fails the test for an untyped or internal error."""
    text = str(exc)
    assert "Traceback" not in text, text[:500]
    extra = getattr(exc, "extra_info", None)
    if extra:
        code = json.loads(extra)["code"]
    elif isinstance(exc, OSError) and "Detail: Unauthenticated" in text:
        code = "unauthenticated"
    else:  # get_schema: pyarrow drops extra_info, the bridge puts the JSON in the text
        start = text.find('{"code"')
        assert start >= 0, f"untyped error {type(exc).__name__}: {text[:500]}"
        code = json.JSONDecoder().raw_decode(text, start)[0]["code"]
    assert code != "internal", text[:500]
    return code


def record(what: str, exc: BaseException) -> None:
    """In a long run, write each failing case down at once (the run goes on)."""
    report = os.environ.get("OMERO_FLIGHT_FUZZ_REPORT")
    if report:
        with open(report, "a") as fh:
            fh.write(json.dumps({"failure": f"{type(exc).__name__}: {str(exc)[:1000]}",
                                 "input": what[:2000]}) + "\n")


def attempt(call: Callable[[], object], what: str = "") -> str | None:
    try:
        call()
    except (flight.FlightError, pa.ArrowException, OSError) as exc:
        try:
            return error_code(exc)
        except AssertionError:
            record(what, exc)
            raise
    return None


def check_alive(t: Target) -> None:
    t.cases += 1
    if t.proc.poll() is not None:
        record("(after the last case)", RuntimeError("the server process died"))
    assert t.proc.poll() is None, "the server process died"
    assert not t.canary.exists(), "a hostile input created the canary file"
    result = list(t.client.do_action(flight.Action("health", b""), t.options))
    assert json.loads(result[0].body.to_pybytes())["status"] == "ok"


FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])


# -- the tests ---------------------------------------------------------------------------------

@FUZZ
@given(raw=messages)
def test_tickets(target, raw):
    c, o = target.client, target.options
    attempt(lambda: c.do_get(flight.Ticket(raw), o).read_all(), f"do_get {raw[:1500]!r}")
    check_alive(target)


@FUZZ
@given(raw=messages, rpc=st.sampled_from(["info", "schema", "put"]))
def test_descriptors(target, raw, rpc):
    c, o = target.client, target.options
    descriptor = flight.FlightDescriptor.for_command(raw)
    what = f"{rpc} {raw[:1500]!r}"
    if rpc == "info":
        attempt(lambda: c.get_flight_info(descriptor, o), what)
    elif rpc == "schema":
        attempt(lambda: c.get_schema(descriptor, o), what)
    else:
        def put() -> None:
            writer, reader = c.do_put(descriptor, pa.schema([("a", pa.int64())]), o)
            with writer:
                writer.write_table(pa.table({"a": [1]}))
                writer.done_writing()
                reader.read()
        attempt(put, what)
    check_alive(target)


ACTION_NAMES = st.one_of(
    st.sampled_from([ACTION_TABLE_SIZE, ACTION_TABLE_COLUMNS, ACTION_FILE_INFO,
                     ACTION_LIST_TABLES, "health", "version", "whoami", "register_table"]),
    hostile_text)


@FUZZ
@given(name=ACTION_NAMES, body=messages)
def test_actions_and_listings(target, name, body):
    c, o = target.client, target.options
    if not name:
        name = "health"

    def act() -> None:
        list(c.do_action(flight.Action(name, body), o))

    try:
        attempt(act, f"action {name[:100]!r} {body[:1500]!r}")
    except UnicodeEncodeError:
        pass  # a lone surrogate cannot even be sent as an action name
    attempt(lambda: list(c.list_flights(body, o)), f"list_flights {body[:1500]!r}")
    check_alive(target)


column_names = st.one_of(hostile_text.filter(bool), st.sampled_from(["x", "image", "roi"]))
metadata = st.dictionaries(
    st.sampled_from([META_STRING_SIZE, META_DESCRIPTION, META_COLUMN_TYPE, b"other"]),
    st.one_of(st.binary(max_size=20),
              st.sampled_from([b"200000000", b"0", b"-1", b"1" * 30, b"\xff",
                               b"::omero::grid::ImageColumn", b"LongColumn"])),
    max_size=3)


@st.composite
def upload_cases(draw) -> tuple[bytes, pa.Table]:
    names = draw(st.lists(column_names, min_size=1, max_size=4, unique=True))
    # Arrow names are UTF-8: a lone surrogate cannot even be put in a schema.
    names = [n.encode("utf-8", "replace").decode() for n in names]
    fields, columns = [], []
    for name in names:
        kind = draw(st.sampled_from(["int", "str", "float"]))
        typ = {"int": pa.int64(), "str": pa.string(), "float": pa.float64()}[kind]
        values = {"int": [1, 2], "str": ["a", "bb"], "float": [0.5, 1.5]}[kind]
        fields.append(pa.field(name, typ, metadata=draw(metadata) or None))
        columns.append(pa.array(values, typ))
    try:
        table = pa.Table.from_arrays(columns, schema=pa.schema(fields))
    except (pa.ArrowException, ValueError):
        table = pa.table({"a": [1]})
    descriptor = {"v": 1, "kind": "upload", "name": draw(hostile_text),
                  "links": draw(st.one_of(
                      st.lists(st.tuples(st.sampled_from(["Image", "image", "Roi", "x"]),
                                         hostile_ints), max_size=5),
                      json_values)),
                  "description": draw(st.one_of(hostile_text, json_values))}
    return dumps(descriptor), table


@FUZZ
@given(case=upload_cases())
def test_upload_names_and_schemas(target, case):
    raw, table = case
    c, o = target.client, target.options

    def put() -> None:
        writer, reader = c.do_put(flight.FlightDescriptor.for_command(raw), table.schema, o)
        with writer:
            writer.write_table(table)
            writer.done_writing()
            reader.read()

    attempt(put, f"upload {raw[:1000]!r} {table.schema!r}"[:2000])
    check_alive(target)


@FUZZ
@given(raw=messages, user=hostile_text, password=hostile_text)
def test_sign_in_and_tokens(target, raw, user, password):
    c = target.client
    user, password = user[:500], password[:500]  # keeps the header under gRPC's 8 KiB
    try:
        attempt(lambda: c.authenticate_basic_token(user, password),
                f"sign in {user[:100]!r} {password[:100]!r}")
    except UnicodeEncodeError:
        pass  # not sendable
    # gRPC sends printable ASCII header values only (the client refuses others itself)
    # gRPC sends printable ASCII header values only (the client refuses others itself),
    # and gRPC refuses headers over its metadata limit (8 KiB) before any bridge code runs.
    token = "".join(ch for ch in raw[:4000].decode("latin-1") if " " <= ch <= "~")
    options = flight.FlightCallOptions(headers=[(b"authorization",
                                                 f"Bearer {token}".encode("latin-1"))])
    attempt(lambda: list(c.do_action(flight.Action("whoami", b""), options)),
            f"bearer {token[:1500]!r}")
    check_alive(target)
