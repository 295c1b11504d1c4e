"""Row lists on the wire: little-endian int64 in hex, a JSON list still accepted.

``TableTicket.to_json`` writes a row list as ``{"int64_le_hex": ...}``; ``from_json`` reads
that or a plain JSON list (clients written from docs/protocol.md), every row number checked.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flight_protocol.messages import (
    MAX_INT64,
    MAX_ROW_LIST,
    ProtocolError,
    TableTicket,
    decode,
    pack_rows,
    row_array,
    unpack_rows,
)

row_numbers = st.integers(0, MAX_INT64)


@given(rows=st.lists(row_numbers, min_size=1, max_size=300))
def test_a_row_list_round_trips_packed_in_any_order_with_repeats(rows):
    ticket = TableTicket(file_id=3, rows=rows)
    body = json.loads(ticket.encode())
    assert set(body["rows"]) == {"int64_le_hex"}
    assert bytes.fromhex(body["rows"]["int64_le_hex"]) == np.asarray(rows, "<i8").tobytes()
    back = decode(ticket.encode(), "ticket")
    assert back == ticket and list(back.rows) == rows
    assert all(type(r) is int for r in back.rows)
    assert row_array(back.rows).tolist() == rows == row_array(ticket.rows).tolist()


@given(rows=st.lists(row_numbers, max_size=50))
def test_a_plain_json_list_is_still_read(rows):
    body = TableTicket(file_id=3).to_json() | {"rows": rows}
    assert list(decode(json.dumps(body).encode(), "ticket").rows) == rows


@given(raw=st.binary(max_size=200), mangle=st.sampled_from(["", "0", "g", " ", "\u00e9"]),
       upper=st.booleans())
def test_any_packed_text_is_row_numbers_or_a_protocol_error(raw, mangle, upper):
    text = raw.hex() + mangle
    text = text.upper() if upper else text
    try:
        rows = unpack_rows({"int64_le_hex": text})
    except ProtocolError as exc:
        assert any(w in str(exc) for w in ("hex", "8-byte", "row number"))
    else:
        assert len(raw) % 8 == 0 and not mangle
        assert rows == tuple(np.frombuffer(raw, "<i8").tolist())
        assert all(0 <= r <= MAX_INT64 for r in rows)


def test_the_row_list_limit_holds_for_packed_lists():
    assert len(unpack_rows(pack_rows(range(MAX_ROW_LIST)))) == MAX_ROW_LIST
    with pytest.raises(ProtocolError, match="at most"):
        unpack_rows(pack_rows(range(MAX_ROW_LIST + 1)))


@pytest.mark.parametrize(("packed", "words"), [
    ({"int64_le_hex": [1, 2]}, "string of hex digits"),
    ({"int64_le_hex": "00", "stop": 3}, "unknown field"),
    ({"int64_le_hex": np.array([5, -7], "<i8").tobytes().hex()}, "got -7"),
    ({"int64_le_hex": "0500000000000000\n0600000000000000"}, "other than hex digits"),
    ({"int64_le_hex": "05000000000000000\n600000000000000"}, "not hex"),
])
def test_bad_packed_lists_are_refused_naming_what_is_wrong(packed, words):
    body = TableTicket(file_id=3).to_json() | {"rows": packed}
    with pytest.raises(ProtocolError, match=words):
        decode(json.dumps(body).encode(), "ticket")


def test_checked_rows_made_by_hand_are_checked_again():
    from flight_protocol.messages import _CheckedRows

    with pytest.raises(ProtocolError, match="row number"):
        TableTicket(file_id=3, rows=_CheckedRows([-1, 2**70]))
    with pytest.raises(ProtocolError, match="row number"):
        dataclasses.replace(TableTicket(file_id=3, rows=[1]), rows=_CheckedRows([2**70]))
