"""A bridge that lies in its plan or its batches: the client raises a typed error.

A real Flight server over loopback announces a row count and a schema in
``get_flight_info`` and then streams something else. Nothing is cast into the
plan's types, and an absurd row count is never preallocated.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flight_client import errors
from flight_client.connection import Connection
from flight_client.results import ReadResult
from flight_client.transport import Transport
from flight_protocol.messages import TableTicket, encode_body

PLANNED = pa.schema([("__row__", pa.int64()), ("a", pa.int64())])


class LyingBridge(flight.FlightServerBase):
    """Plans ``total`` rows of :data:`PLANNED`, then sends ``batch``."""

    def __init__(self) -> None:
        super().__init__("grpc://127.0.0.1:0")
        self.total = 3
        self.listed: list[dict] = [{"file_id": 1}]
        self.batch = pa.record_batch([pa.array([0, 1, 2]), pa.array([5, 6, 7])], schema=PLANNED)

    def get_flight_info(self, context, descriptor):
        endpoint = flight.FlightEndpoint(b"rows", [])
        return flight.FlightInfo(PLANNED, descriptor, [endpoint], self.total, -1)

    def do_get(self, context, ticket):
        return flight.RecordBatchStream(pa.Table.from_batches([self.batch]))

    def do_action(self, context, action):
        """A bridge without sign-in whose listing pages never end (the same token)."""
        if action.type == "list_tables":
            yield encode_body(tables=self.listed, next_page_token="7")
        else:
            yield encode_body(user="nobody")


@pytest.fixture(scope="module")
def liar() -> Iterator[LyingBridge]:
    server = LyingBridge()
    threading.Thread(target=server.serve, daemon=True).start()
    yield server
    server.shutdown()


@pytest.fixture
def read(liar: LyingBridge) -> Iterator[ReadResult]:
    transport = Transport(f"grpc://127.0.0.1:{liar.port}", retries=0)
    yield ReadResult(transport, TableTicket(file_id=1), progress=False)
    transport.close()


def test_the_honest_plan_reads(read):
    assert list(read.to_pandas()["a"]) == [5, 6, 7]


@pytest.mark.parametrize("total", [10**15, 2**62])
def test_an_absurd_row_count_is_not_preallocated(liar, read, total, monkeypatch):
    monkeypatch.setattr(liar, "total", total)
    with pytest.raises(errors.ServerError, match=f"sent 3 rows of a read it planned as {total}"):
        read.to_pandas()


@pytest.mark.parametrize("output", ["to_pandas", "to_arrow"])
@pytest.mark.parametrize("batch", [
    pa.record_batch([pa.array(["x", "y", "z"])], names=["a"]),
    pa.record_batch([pa.array([0, 1, 2]), pa.array(["1", "2", "3"])], names=["__row__", "a"]),
    pa.record_batch([pa.array([0, 1, 2]), pa.array([5, 6, 7])], names=["__row__", "b"]),
], ids=["fewer-columns", "other-type", "other-name"])
def test_a_batch_unlike_the_plan_is_a_server_error(liar, read, batch, output, monkeypatch):
    monkeypatch.setattr(liar, "batch", batch)
    with pytest.raises(errors.ServerError, match="differ from the read's"):
        getattr(read, output)()


@pytest.mark.parametrize("listed", [[{"file_id": 1}], []], ids=["same-token", "empty-page"])
def test_a_listing_that_would_page_for_ever_ends(liar, listed, monkeypatch):
    monkeypatch.setattr(liar, "listed", listed)
    conn = Connection(server=f"grpc://127.0.0.1:{liar.port}", keep_alive=False)
    conn.connect(interactive=False)
    try:
        with pytest.raises(errors.ServerError, match="page token '7' twice"):
            conn.list_tables()
    finally:
        conn.shutdown()


def test_a_plan_with_tickets_that_are_not_tickets_is_a_server_error(liar):
    transport = Transport(f"grpc://127.0.0.1:{liar.port}", retries=0)
    transport.adopt_token((b"authorization", b"Bearer not-checked-by-this-server"))
    try:
        with pytest.raises(errors.ServerError, match="ticket this client cannot read"):
            ReadResult(transport, TableTicket(file_id=1), progress=False).plan  # noqa: B018
    finally:
        transport.close()


@pytest.mark.parametrize("output", ["to_pandas", "to_arrow", "to_reader"])
@pytest.mark.parametrize(("total", "said"), [(2, "more than the 2 rows"),
                                             (5, "sent 3 rows of a read it planned as 5")])
def test_rows_unlike_the_plans_count_are_a_server_error(liar, read, output, total, said,
                                                         monkeypatch):
    monkeypatch.setattr(liar, "total", total)
    with pytest.raises(errors.ServerError, match=said):
        data = getattr(read, output)()
        if output == "to_reader":
            data.read_all()


@pytest.mark.parametrize("output", ["to_pandas", "to_arrow", "to_reader"])
def test_string_offsets_outside_their_data_are_a_server_error(liar, read, output, monkeypatch):
    """Offsets Arrow's reader does not check (only the last one): converting them would
    read other memory (to_arrow().to_pandas() crashed the process)."""
    strings = pa.Array.from_buffers(pa.string(), 3, [
        None, pa.py_buffer(np.array([0, 50_000_000, 2, 3], np.int32)), pa.py_buffer(b"abc")])
    rows = pa.array([0, 1, 2], pa.int64())
    batch = pa.RecordBatch.from_arrays([rows, strings], names=["__row__", "a"])
    monkeypatch.setattr(liar, "batch", batch)
    with pytest.raises(errors.ServerError, match="malformed record batch"):
        data = getattr(read, output)()
        if output == "to_reader":
            data.read_all()
