"""Queries that crashed or froze the server (issue 10, findings 1, 2 and 8), over real Flight.

The bridge runs as ``omero-flight serve`` in a child process over an embedded
store holding the same table as HDF5 and as TileDB, so a regression shows as
a dead server here, not as a dead pytest. Every refusal must be a typed Flight
error with the JSON code ``invalid_argument``; every accepted query must give
the rows Python's own arithmetic gives.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from bench.servers import STORE_PASSWORD, STORE_USER, running_store_bridge
from flight_protocol import columns as cols
from flight_protocol.messages import TableTicket
from flight_server.backends.formats import hdf5 as hdf5_layout
from flight_server.query import MAX_QUERY_LENGTH, check_query
from tests.flight_server.backends.omero.conftest import (  # noqa: F401 - fixtures
    omero_bridge,
    omero_standin,
    omero_world,
    sign_in,
)
from tests.flight_server.test_tiledb_tables import upload_as
from tests.flight_server.wire import action, error_code

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FORMATS = ["hdf5", "tiledb"]
ROWS = 40


def sample_table(rows: int = ROWS) -> pa.Table:
    a = np.arange(rows, dtype=np.int64) - rows // 2
    a[0], a[1] = INT64_MIN, INT64_MAX
    return pa.table({
        "a": pa.array(a),
        "y": pa.array(np.linspace(-2.5, 2.5, rows)),
        "s": pa.array([f"r{i}" for i in range(rows)]),
        "b": pa.array(np.arange(rows) % 3 == 0),
        "Image": pa.array(np.arange(rows, dtype=np.int64) + 100),
    })


@dataclass
class QueryBridge:
    """A served store with the sample table in each format, and a signed-in client."""

    process: object
    client: flight.FlightClient
    options: flight.FlightCallOptions
    file_ids: dict[str, int]
    data: pa.Table

    def alive(self) -> bool:
        return self.process.poll() is None  # type: ignore[attr-defined]

    def query(self, fmt: str, text: str, variables: dict | None = None) -> pa.Table:
        """do_get a raw JSON ticket (no client-side checks: the server sees what we send)."""
        body = TableTicket(file_id=self.file_ids[fmt], chunk_size=16).to_json()
        body.update(query=text, variables=variables or {})
        ticket = flight.Ticket(json.dumps(body).encode())
        return self.client.do_get(ticket, options=self.options).read_all()


@pytest.fixture(scope="module")
def query_bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QueryBridge]:
    pytest.importorskip("tiledb")
    store = Path(tmp_path_factory.mktemp("query-store")) / "store"
    with running_store_bridge(store) as bridge:
        client = flight.FlightClient(bridge.url)
        header = client.authenticate_basic_token(STORE_USER, STORE_PASSWORD)
        options = flight.FlightCallOptions(headers=[header], timeout=60)
        data = sample_table()
        ids = {fmt: upload_as(client, options, data, fmt, f"queries {fmt}")["file_id"]
               for fmt in FORMATS}
        yield QueryBridge(bridge.process, client, options, ids, data)
        client.close()


def rows_where(data: pa.Table, predicate) -> list[int]:
    """Row numbers where ``predicate(row as a dict)`` holds, computed in Python."""
    return [i for i, row in enumerate(data.to_pylist()) if predicate(row)]


def answered_rows(table: pa.Table) -> list[int]:
    return table.column(0).to_pylist()


def refused(bridge: QueryBridge, fmt: str, text: str, variables: dict | None = None,
            *words: str) -> str:
    with pytest.raises(flight.FlightError) as info:
        bridge.query(fmt, text, variables)
    assert error_code(info.value) == "invalid_argument", info.value
    message = json.loads(info.value.extra_info)["message"]
    for word in words:
        assert word in message, message
    assert bridge.alive()
    return message


# -- finding 1: integer modulo traps (SIGFPE) ------------------------------------------------

CRASHERS = [
    ("(a*0+m) % n == 0", {"m": INT64_MIN, "n": -1}),
    ("(a*0 + (-9223372036854775808)) % -1 == 0", {}),
    ("(a*0+m) % (a*0+n) == 0", {"m": INT64_MIN, "n": -1}),
    ("where(a < 0, m, m) % (a - a - 1) == 0", {"m": INT64_MIN}),
    ("a % (a - a) == 0", {}),
    ("a % 0 == 0", {}),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("text", "variables"), CRASHERS)
def test_integer_modulo_cannot_trap(query_bridge, fmt, text, variables):
    got = query_bridge.query(fmt, text, variables)
    # x % -1, x % 1 and numexpr's x % 0 are all 0, so every row matches
    assert answered_rows(got) == list(range(ROWS))
    assert query_bridge.alive()
    assert action(query_bridge.client, query_bridge.options, "health")["status"] == "ok"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("text", "variables", "predicate"), [
    ("a % 3 == 1", {}, lambda r: r["a"] % 3 == 1),
    ("a % -3 == -1", {}, lambda r: r["a"] % -3 == -1),
    ("(a - 5) % n == 0", {"n": 4}, lambda r: (r["a"] - 5) % 4 == 0),
    ("a % (Image - 100) == 2", {},
     lambda r: (r["Image"] - 100) not in (0, -1) and r["a"] % (r["Image"] - 100) == 2),
    ("y % 1.5 > 0.5", {}, lambda r: r["y"] % 1.5 > 0.5),
    ("a / n > 2", {"n": -1}, lambda r: r["a"] / -1 > 2),
    ("(a & 1) == 0", {}, lambda r: r["a"] & 1 == 0),
])
def test_legit_modulo_and_division_keep_their_answers(query_bridge, fmt, text, variables,
                                                      predicate):
    got = query_bridge.query(fmt, text, variables)
    assert answered_rows(got) == rows_where(query_bridge.data, predicate)


# -- finding 2: constant folding of unbounded powers (freeze) --------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("text", [
    "a > 2147483648 ** 4294967296",
    "a > 3 ** 30000000",
    "a > 7 ** 123456789",
    "a > (2 ** 64) ** (2 ** 64)",
    "a > 10.0 ** 400",
    "a > 2 ** 63",
])
def test_huge_constant_powers_are_refused(query_bridge, fmt, text):
    refused(query_bridge, fmt, text, None, "query refused")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("text", "variables", "why"), [
    ("a ** a > 1", {}, "exponent"),
    ("a ** n > 1", {"n": 100}, "larger than"),
    ("a ** -1 > 0", {}, "negative integer power"),
    ("a ** n > 0", {"n": -2}, "negative integer power"),
])
def test_unbounded_or_trapping_powers_are_refused(query_bridge, fmt, text, variables, why):
    refused(query_bridge, fmt, text, variables, why)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("text", "predicate"), [
    ("a > 2 ** 10", lambda r: r["a"] > 1024),
    ("y ** 2 > 4", lambda r: r["y"] ** 2 > 4),
    ("y ** -1.0 > 1", lambda r: r["y"] != 0 and 1 / r["y"] > 1),
    ("(Image - 100) ** 3 > 27000", lambda r: (r["Image"] - 100) ** 3 > 27000),
    ("a == -9223372036854775808", lambda r: r["a"] == INT64_MIN),
    ("a == 9223372036854775807", lambda r: r["a"] == INT64_MAX),
    ("y / 5e-324 > 1", lambda r: r["y"] / 5e-324 > 1),
    ("y / 3 == y * (1 / 3)", lambda r: r["y"] / 3 == r["y"] * (1 / 3)),
])
def test_bounded_powers_and_extreme_literals_work(query_bridge, fmt, text, predicate):
    assert answered_rows(query_bridge.query(fmt, text)) == rows_where(query_bridge.data,
                                                                      predicate)


@pytest.mark.parametrize("text", ["a == a ** 2", "a ** 3 < 0", "y ** 3 == y * y * y",
                                  "y ** 0.5 >= 0", "a / 3 == a * (1 / 3)"])
def test_formats_agree_where_numexpr_would_rewrite(query_bridge, text):
    """Same rows from PyTables (HDF5) and numexpr.evaluate (TileDB), overflow included."""
    answers = [answered_rows(query_bridge.query(fmt, text)) for fmt in FORMATS]
    assert answers[0] == answers[1]


# -- finding 8: parser recursion and division by zero while folding --------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("text", "why"), [
    ("(" * 4000 + "a > 1" + ")" * 4000, "brackets"),
    ("-" * 9000 + "a > 1", "operators"),
    ("~" * 9000 + "b", "operators"),
    ("a" + " + a" * 2400 + " > 1", "operators"),
    ("a" + "**1" * 2400 + " > 1", "operators"),
    ("not " * 2400 + "b", "operators"),
    ("a > " + "9" * 5000, "digits"),
    ("a" + "[0]" * 3000 + " > 1", "too deep"),
    ("a > 1" + " " * MAX_QUERY_LENGTH, "longer than"),
    ("(a > 1) | " * 300 + "b", "parts"),
    ("y / 0 > 1", "division by zero"),
    ("y / 0.0 > 1", "division by zero"),
    ("1 / 0 < a", "division by zero"),
    ("1 % 0 < a", "modulo by zero"),
    ("a > 1e308 * 10", "finite"),
    ("a > 1e999", "finite"),
    ("a > sqrt(-1)", "finite"),
    ("1 > 0", "at least one column"),
    ("m % n == 0", "at least one column"),
    ("a + 1", "condition"),
    ("a > 1\x00", "nul"),
    ("a > '\ud800'", "Unicode"),
])
def test_parser_and_folding_refusals(query_bridge, fmt, text, why):
    variables = {"m": INT64_MIN, "n": -1} if text.startswith("m %") else None
    refused(query_bridge, fmt, text, variables, why)


@pytest.mark.parametrize("fmt", FORMATS)
def test_long_id_lists_are_balanced_not_deep(query_bridge, fmt):
    """``(Image == 100) | (Image == 101) | ...``: a chain, not 60 levels of nesting."""
    wanted = list(range(100, 160, 2))
    text = " | ".join(f"(Image == {i})" for i in wanted)
    got = query_bridge.query(fmt, text)
    assert answered_rows(got) == [i - 100 for i in wanted if i - 100 < ROWS]


# -- evaluation holds the HDF5 lock for one chunk at a time ----------------------------------

class CountingLock:
    """The real HDF5 lock, counting how often it is taken."""

    def __init__(self, lock) -> None:
        self.lock, self.taken = lock, 0

    def __enter__(self):
        self.taken += 1
        return self.lock.__enter__()

    def __exit__(self, *exc):
        return self.lock.__exit__(*exc)


def test_hdf5_where_takes_the_lock_per_chunk(tmp_path, monkeypatch):
    data = sample_table(1000)
    schema = cols.with_string_sizes(cols.omero_schema(data.schema), {"s": 8})
    path = tmp_path / "t.h5"
    writer = hdf5_layout.H5Writer(path, schema)
    for batch in data.to_batches():
        writer.append(cols.conform_batch(batch, schema))
    writer.close()
    reader = hdf5_layout.H5Reader(path)
    try:
        types = {f.name: cols.column_type_of(f) for f in reader.schema}
        query = check_query("(a % 7 == 3) | (y > 2)", types)
        whole = reader.where(query, 0, 1000)
        counting = CountingLock(hdf5_layout.HDF5_LOCK)
        monkeypatch.setattr(hdf5_layout, "WHERE_ROWS", 64)
        monkeypatch.setattr(hdf5_layout, "HDF5_LOCK", counting)
        chunked = reader.where(query, 0, 1000)
    finally:
        monkeypatch.undo()
        reader.close()
    assert chunked.tolist() == whole.tolist()
    assert whole.tolist() == rows_where(data, lambda r: r["a"] % 7 == 3 or r["y"] > 2)
    assert counting.taken >= math.ceil(1000 / 64)


# -- through OMERO: the checked query is forwarded to OMERO.tables ---------------------------

@pytest.fixture
def omero_alice(request):
    pytest.importorskip("omero", reason="omero-py (with zeroc-ice 3.6) is not installed")
    bridge = request.getfixturevalue("omero_bridge")
    return bridge, request.getfixturevalue("sign_in")("alice")


@pytest.mark.omero
def test_crash_query_through_omero_leaves_its_tables_service_alive(omero_alice):
    import pandas as pd

    import flight_client

    bridge, conn = omero_alice
    frame = sample_table().drop_columns(["Image"]).to_pandas()
    image = bridge.world.images[bridge.world.shared_group]
    ann = flight_client.upload_table(frame, "query safety", parent_id=image,
                                     omero_connector=conn, progress=False)
    got = flight_client.read_table(annotation_id=ann, query="(a*0+m) % n == 0",
                                   variables={"m": INT64_MIN, "n": -1}, omero_connector=conn)
    assert bridge.standin.process.poll() is None, "OMERO's tables service died"
    pd.testing.assert_frame_equal(got, frame, check_dtype=False)
    for text in ("a > 2147483648 ** 4294967296", "a > 7 ** 123456789", "y / 0 > 1"):
        with pytest.raises(flight_client.InvalidRequest) as info:
            flight_client.read_table(annotation_id=ann, query=text, omero_connector=conn)
        assert info.value.code == "invalid_argument"
    found = flight_client.read_table(annotation_id=ann, query="a % (a - a - 1) == 0",
                                     omero_connector=conn)
    assert len(found) == ROWS and bridge.standin.process.poll() is None


# -- the rewritten expressions themselves -----------------------------------------------------

TYPES = {"a": cols.LONG, "y": cols.DOUBLE, "s": cols.STRING, "b": cols.BOOL}


@pytest.mark.parametrize(("text", "variables", "expression"), [
    ("(a*0+m) % n == 0", {"m": INT64_MIN, "n": -1}, "((((c0 * 0) + v0) % 1) == 0)"),
    ("a % (a - 1) == 0", {}, "((c0 % where(((c0 - 1) == 0) | ((c0 - 1) == -1), 1, "
                             "(c0 - 1))) == 0)"),
    ("a % z == 0", {"z": 0}, "((c0 % 1) == 0)"),
    ("y % 0.0 == 0", {}, "((c0 % 0.0) == 0)"),
    ("a > 2 ** 10 - 1", {}, "(c0 > 1023)"),
    ("a > -9223372036854775808", {}, "(c0 > (-9223372036854775808))"),
    ("True & b", {}, "(c0 & True)"),
    ("-b < a", {}, "((0 - c0) < c1)"),
    ("(a == 1) | (a == 2) | (a == 3) | (a == 4)", {},
     "(((c0 == 1) | (c0 == 2)) | ((c0 == 3) | (c0 == 4)))"),
    ("y > sqrt(4) * 2", {}, "(c0 > 4.0)"),
    ("y ** 2 > y / 2.5", {}, "((c0 ** v0) > (c0 / v1))"),
])
def test_rewritten_expressions(text, variables, expression):
    assert check_query(text, TYPES, variables).expression == expression


def test_long_chains_stay_shallow():
    text = " | ".join(f"(a == {i})" for i in range(200))
    assert check_query(text, TYPES).expression.count("(((((((((") == 0
