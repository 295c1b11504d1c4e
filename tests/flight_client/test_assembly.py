"""Assembling a read's batches into its DataFrame as they arrive (flight_client.assembly).

The reference is what the client did before: ``outputs.to_pandas`` of the whole
Arrow table. Batches go through a real Arrow IPC stream first, so each one is a
slice of one message buffer, as Flight delivers them.
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flight_client import errors, outputs
from flight_client.assembly import Assembly, compact, endpoint_starts, to_dataframe
from flight_protocol.messages import ROW_NUMBER_COLUMN, RowRange, TableTicket

#: The mask column's type as the bridge serves it.
MASK = pa.struct([("imageId", pa.int64()), ("theZ", pa.int32()), ("theT", pa.int32()),
                  ("x", pa.float64()), ("y", pa.float64()), ("w", pa.float64()),
                  ("h", pa.float64()), ("bytes", pa.binary())])

TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
FINITE = st.floats(allow_nan=False, allow_infinity=True, width=64)


def _values(kind: str, n: int, data: st.DataObject) -> pa.Array:
    """``n`` values of one column kind (the types the bridge serves, and nullable extras)."""
    draw = data.draw
    if kind == "long":
        return pa.array(draw(st.lists(st.integers(-2**63, 2**63 - 1), min_size=n, max_size=n)),
                        pa.int64())
    if kind == "long_nulls":  # not served (integer columns hold no nulls): as Arrow converts
        return pa.array(draw(st.lists(st.none() | st.integers(-2**40, 2**40), min_size=n,
                                      max_size=n)), pa.int64())
    if kind == "double":
        return pa.array(draw(st.lists(st.none() | FINITE | st.just(float("nan")), min_size=n,
                                      max_size=n)), pa.float64())
    if kind == "bool":
        return pa.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), pa.bool_())
    if kind == "bool_nulls":
        return pa.array(draw(st.lists(st.none() | st.booleans(), min_size=n, max_size=n)),
                        pa.bool_())
    if kind == "string":
        return pa.array(draw(st.lists(st.none() | TEXT, min_size=n, max_size=n)), pa.string())
    if kind in ("long_array", "float_array", "double_array"):
        typ = {"long_array": pa.int64(), "float_array": pa.float32(),
               "double_array": pa.float64()}[kind]
        cell = st.integers(-1000, 1000) if kind == "long_array" else st.floats(-1e6, 1e6, width=32)
        return pa.array(draw(st.lists(st.lists(cell, min_size=3, max_size=3), min_size=n,
                                      max_size=n)), pa.list_(typ, 3))
    if kind == "mask":
        mask = st.fixed_dictionaries({
            "imageId": st.integers(0, 10**6), "theZ": st.integers(0, 9), "theT": st.integers(0, 9),
            "x": FINITE, "y": FINITE, "w": FINITE, "h": FINITE, "bytes": st.binary(max_size=8)})
        return pa.array(draw(st.lists(mask, min_size=n, max_size=n)), MASK)
    if kind == "empty":
        return pa.nulls(n)
    raise AssertionError(kind)


KINDS = ["long", "long_nulls", "double", "bool", "bool_nulls", "string", "long_array",
         "float_array", "double_array", "mask", "empty"]


def _as_flight_batches(table: pa.Table, cuts: list[int]) -> list[pa.RecordBatch]:
    """The table cut at ``cuts`` and sent through one IPC stream, as Flight delivers it."""
    bounds = [0, *sorted(set(cuts)), table.num_rows]
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for a, b in zip(bounds, bounds[1:], strict=False):
            if b > a:
                writer.write_batch(table.slice(a, b - a).combine_chunks().to_batches()[0])
    return list(pa.ipc.open_stream(sink.getvalue()))


def _sliced_batches(table: pa.Table, cuts: list[int]) -> list[pa.RecordBatch]:
    """The table cut at ``cuts`` in memory: each batch's arrays start at an offset."""
    bounds = [0, *sorted(set(cuts)), table.num_rows]
    return [batch for a, b in zip(bounds, bounds[1:], strict=False) if b > a
            for batch in table.slice(a, b - a).to_batches()]


@st.composite
def reads(draw: st.DrawFn) -> tuple[pa.Table, list[pa.RecordBatch]]:
    """A table of some of every kind of column (maybe with row numbers), and its batches."""
    n = draw(st.integers(0, 60))
    kinds = draw(st.lists(st.sampled_from(KINDS), max_size=6))
    data = draw(st.data())
    arrays = {f"c{i} {kind}": _values(kind, n, data) for i, kind in enumerate(kinds)}
    if draw(st.booleans()):
        rows = draw(st.lists(st.integers(0, 10**9), min_size=n, max_size=n))
        arrays = {ROW_NUMBER_COLUMN: pa.array(rows, pa.int64()), **arrays}
    if not arrays:
        arrays = {"only": pa.array(range(n), pa.int64())}
    table = pa.table(arrays)
    cuts = draw(st.lists(st.integers(0, n), max_size=8))
    if draw(st.integers(0, 3)) == 0:  # now and then in-memory slices rather than messages
        return table, _sliced_batches(table, cuts)
    return table, _as_flight_batches(table, cuts)


def _expected(table: pa.Table) -> pd.DataFrame:
    return outputs.to_pandas(table)


def _same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    assert got.dtypes.to_dict() == want.dtypes.to_dict()
    pd.testing.assert_index_equal(got.index, want.index, exact=True)
    pd.testing.assert_index_equal(got.columns, want.columns, exact=True)
    pd.testing.assert_frame_equal(got, want, check_exact=True)


@settings(max_examples=150, deadline=None)
@given(reads(), st.randoms(use_true_random=False))
def test_shuffled_batches_with_starts_equal_to_pandas(read, rnd: random.Random):
    table, batches = read
    starts = np.cumsum([0] + [b.num_rows for b in batches])[:-1].tolist()
    placed = list(zip(starts, batches, strict=True))
    rnd.shuffle(placed)
    assembly = Assembly(table.schema, table.num_rows)
    for start, batch in placed:
        assembly.add(batch, start=start)
    _same(assembly.finish(), _expected(table))


@settings(max_examples=100, deadline=None)
@given(reads(), st.booleans())
def test_batches_in_order_equal_to_pandas(read, known: bool):
    """In order, with the row count from the plan or unknown (-1, a query)."""
    table, batches = read
    got = to_dataframe(table.schema, table.num_rows if known else -1, iter(batches))
    _same(got, _expected(table))


def test_empty_table_keeps_dtypes_and_columns():
    schema = pa.schema([(ROW_NUMBER_COLUMN, pa.int64()), ("n", pa.int64()), ("s", pa.string()),
                        ("b", pa.bool_()), ("a", pa.list_(pa.float64(), 2))])
    for total in (0, -1):
        got = to_dataframe(schema, total, iter([]))
        _same(got, _expected(schema.empty_table()))
    only_rows = pa.schema([(ROW_NUMBER_COLUMN, pa.int64())])
    batch = pa.record_batch([pa.array([4, 9], pa.int64())], schema=only_rows)
    _same(to_dataframe(only_rows, 2, iter([batch])), _expected(pa.Table.from_batches([batch])))


def test_result_does_not_hold_the_flight_messages():
    """Every column is copied out of the message buffers, so they can be freed at once."""
    table = pa.table({ROW_NUMBER_COLUMN: pa.array(range(1000), pa.int64()),
                      "x": pa.array(np.linspace(0, 1, 1000)),
                      "label": pa.array([f"cell-{i}" for i in range(1000)]),
                      "v": pa.array([[i, i] for i in range(1000)], pa.list_(pa.int64(), 2))})
    batches = _as_flight_batches(table, [300, 700])
    messages = [(b.column(0).buffers()[1].address, b.nbytes) for b in batches]
    message_span = (min(a for a, _ in messages), max(a + n for a, n in messages))

    got = to_dataframe(table.schema, 1000, iter(batches))
    labels = got["label"].array._pa_array  # pandas' str dtype holds Arrow chunks
    addresses = [buf.address for chunk in labels.chunks for buf in chunk.buffers() if buf]
    addresses.append(got["x"].to_numpy().__array_interface__["data"][0])
    addresses.append(got.index.to_numpy().__array_interface__["data"][0])
    assert addresses and not any(message_span[0] <= a < message_span[1] for a in addresses)
    assert got["label"].tolist() == [f"cell-{i}" for i in range(1000)]


def test_result_is_writable():
    table = pa.table({"x": pa.array([1.0, 2.0]), "s": pa.array(["a", "b"]),
                      "v": pa.array([[1, 2], [3, 4]], pa.list_(pa.int64(), 2))})
    got = to_dataframe(table.schema, 2, iter(_as_flight_batches(table, [1])))
    got.iloc[0, 0] = 5.0
    got.iloc[1, 2] = None
    got.loc[0, "s"] = "z"
    assert got["x"].tolist() == [5.0, 2.0] and got["s"].tolist() == ["z", "b"]


def test_rows_beyond_the_plan_are_refused():
    schema = pa.schema([("n", pa.int64())])
    batch = pa.record_batch([pa.array([1, 2, 3], pa.int64())], schema=schema)
    assembly = Assembly(schema, 2)
    with pytest.raises(errors.ServerError, match=r"rows 0\.\.2 of a read it planned as 2 rows"):
        assembly.add(batch)
    short = Assembly(schema, 5)
    short.add(batch)
    with pytest.raises(errors.ServerError, match="sent 3 rows of a read it planned as 5"):
        short.finish()


def test_endpoint_starts():
    def endpoint(rows):
        ticket = TableTicket(file_id=1, rows=rows).encode()
        return pa.flight.FlightEndpoint(ticket, [])

    parts = [endpoint(RowRange(100, 150)), endpoint(RowRange(150, 200)),
             endpoint(RowRange(200, 210))]
    assert endpoint_starts(parts) == [0, 50, 100]
    assert endpoint_starts([*parts, endpoint((3, 4))]) is None
    assert endpoint_starts([pa.flight.FlightEndpoint(b"not a ticket", [])]) is None


def test_compact_strings_whose_data_starts_late():
    """A string array whose offsets start past 0 (as a writer may send a slice)."""
    data = pa.py_buffer(b"xxxabcde")
    offsets = pa.py_buffer(np.array([3, 4, 4, 8], dtype=np.int32).tobytes())
    validity = pa.py_buffer(bytes([0b101]))
    array = pa.Array.from_buffers(pa.string(), 3, [validity, offsets, data], 1)
    copied = compact(array)
    assert copied.type == pa.large_string() and copied.to_pylist() == ["a", None, "bcde"]
    assert all(buf.address != data.address for buf in copied.buffers() if buf is not None)
    assert compact(array.slice(1)).to_pylist() == [None, "bcde"]


@pytest.mark.parametrize("typ", [pa.int64(), pa.bool_()])
def test_nulls_in_a_huge_planned_column_cost_only_the_rows_received(typ):
    """A plan of 10M rows and one batch of 3 rows with a null: the column is not
    converted whole (80 MB), only what arrived; the count is still checked."""
    import tracemalloc

    schema = pa.schema([("a", typ)])
    values = [1, None, 3] if typ == pa.int64() else [True, None, False]
    assembly = Assembly(schema, 10_000_000)
    tracemalloc.start()
    try:
        assembly.add(pa.record_batch([pa.array(values, typ)], schema=schema))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
    with pytest.raises(errors.ServerError, match="sent 3 rows of a read it planned as 10000000"):
        assembly.finish()
    small = Assembly(schema, 5)
    small.add(pa.record_batch([pa.array([values[0], values[2]], typ)], schema=schema), start=3)
    small.add(pa.record_batch([pa.array(values, typ)], schema=schema), start=0)
    want = pa.table({"a": pa.array(values + [values[0], values[2]], typ)}).to_pandas()
    pd.testing.assert_frame_equal(small.finish(), want)
