"""A row list goes packed only to a bridge that reads it (its ``version`` features).

Bridges from before packed row lists refuse ``{"int64_le_hex": ...}``; the transport asks
the bridge's ``version`` once and sends such a bridge a JSON list instead.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from flight_protocol.messages import PACKED_ROWS, RowRange, TableTicket
from tests.flight_client.transport.servers import RowLists

ROWS = [7, 3, 3, 250]


def _read(transport, ticket: TableTicket) -> list[int]:
    _, batches = transport.open_stream(transport.ticket_bytes(ticket))
    return pa.Table.from_batches(list(batches)).column("x").to_pylist()


@pytest.mark.parametrize(("features", "sent"), [
    (None, list), ([PACKED_ROWS], dict), ([], list), (["something-else"], list)])
def test_a_row_list_goes_in_the_form_the_bridge_reads(serve, transport, features, sent):
    bridge = serve(RowLists(features))
    client = transport(bridge.url)
    for _ in range(3):
        assert _read(client, TableTicket(file_id=1, rows=ROWS)) == ROWS
    assert all(isinstance(body["rows"], sent) for body in bridge.raw)
    if sent is dict:
        assert all(set(body["rows"]) == {PACKED_ROWS} for body in bridge.raw)
    assert bridge.calls["version"] == 1  # asked once per connection


def test_tickets_without_a_row_list_ask_nothing(serve, transport):
    bridge = serve(RowLists(None))
    client = transport(bridge.url)
    assert client.ticket_bytes(TableTicket(file_id=1, rows=RowRange(0, 5))) == \
        TableTicket(file_id=1, rows=RowRange(0, 5)).encode()
    assert client.ticket_bytes(TableTicket(file_id=1)) == TableTicket(file_id=1).encode()
    assert bridge.calls["version"] == 0

