"""How a read is cut into record batches: ~1 MiB, more for many columns (streaming.batch_bytes).

Every column of every batch costs the server and the client a fixed few microseconds, so a
100-column table is sent in batches holding at least ~32 KiB of each column, while a narrow
table keeps ~1 MiB batches (which bound the client's peak memory).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flight_protocol.messages import TableTicket
from flight_server import streaming
from tests.flight_server.wire import upload


def _batches(conn: tuple, **ticket: object) -> list[pa.RecordBatch]:
    client, options = conn
    reader = client.do_get(flight.Ticket(TableTicket(**ticket).encode()), options=options)
    return [chunk.data for chunk in reader]


def _float_table(columns: int, rows: int) -> pa.Table:
    rng = np.random.default_rng(columns)
    return pa.table({f"c{i}": rng.random(rows) for i in range(columns)})


@pytest.mark.parametrize(("columns", "rows"), [(3, 200_000), (100, 20_000), (400, 6_000)])
def test_each_column_of_a_batch_holds_at_least_32_kib_up_to_8_mib_a_batch(connect, columns,
                                                                           rows):
    conn = connect("alice")
    data = _float_table(columns, rows)
    file_id = upload(*conn, data, name=f"batches-{columns}")["file_id"]
    got = _batches(conn, file_id=file_id, row_numbers=False)
    assert pa.Table.from_batches(got).equals(data)
    full = got[:-1]  # the last batch holds what is left
    assert full, "the read came as a single batch"
    for batch in full:
        per_column = batch.nbytes // batch.num_columns
        assert per_column >= streaming.MIN_COLUMN_BATCH_BYTES * 0.9 or (
            batch.nbytes >= streaming.MAX_BATCH_BYTES * 0.9), (columns, batch.nbytes)
        assert batch.nbytes <= max(streaming.TARGET_BATCH_BYTES,
                                   streaming.MAX_BATCH_BYTES) * 1.1
    if columns * streaming.MIN_COLUMN_BATCH_BYTES <= streaming.TARGET_BATCH_BYTES:
        # few columns: ~1 MiB batches, as before
        assert all(b.nbytes <= streaming.TARGET_BATCH_BYTES * 1.1 for b in got)


def test_a_named_chunk_size_is_kept_whatever_the_columns(connect):
    conn = connect("alice")
    data = _float_table(100, 5_000)
    file_id = upload(*conn, data, name="batches-chunk")["file_id"]
    got = _batches(conn, file_id=file_id, row_numbers=False, chunk_size=700)
    assert [b.num_rows for b in got] == [700] * 7 + [100]


def test_batch_bytes_grow_with_the_columns_between_the_bounds():
    def schema(n: int) -> pa.Schema:
        return pa.schema([pa.field(f"c{i}", pa.float64()) for i in range(n)])

    assert streaming.batch_bytes(schema(5)) == streaming.TARGET_BATCH_BYTES
    assert streaming.batch_bytes(schema(100)) == 100 * streaming.MIN_COLUMN_BATCH_BYTES
    assert streaming.batch_bytes(schema(5_000)) == streaming.MAX_BATCH_BYTES
