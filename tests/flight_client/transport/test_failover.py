"""A read fails over between an endpoint's locations (replicas), resuming a row range.

The transport opens one location at a time; ``flight_client.reading.failover_batches``
walks the locations over it. Each replica here is a tiny server over the same rows.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flight_client import errors
from flight_client.reading import failover_batches
from flight_protocol.messages import RowRange, TableTicket
from tests.flight_client.transport.servers import BATCH_ROWS, Rows
from tests.processes import free_port

TOTAL = 100
TICKET = TableTicket(file_id=1, rows=RowRange(0, TOTAL))


def values(batches) -> list[int]:
    return pa.Table.from_batches(list(batches)).column("x").to_pylist()


def test_an_unreachable_location_hands_over_to_the_next(serve, transport, caplog):
    good = serve(Rows(TOTAL))
    dead = f"grpc://127.0.0.1:{free_port()}"
    with caplog.at_level("WARNING", logger="flight_client.reading"):
        got = values(failover_batches(transport(good.url, retries=0), TICKET.encode(),
                                      [dead, good.url]))
    assert got == list(range(TOTAL)) and good.tickets == [TICKET]
    assert any(dead in r.getMessage() for r in caplog.records)


def test_a_replica_stopping_mid_stream_resumes_on_the_next(serve, transport):
    broken, good = serve(Rows(TOTAL, break_after=3)), serve(Rows(TOTAL))
    got = values(failover_batches(transport(broken.url), TICKET.encode(),
                                  [broken.url, good.url]))
    assert got == list(range(TOTAL))  # every row once: none lost, none twice
    assert broken.calls["do_get"] == 1  # the broken stream was not started again there
    assert good.tickets == [TableTicket(file_id=1, rows=RowRange(3 * BATCH_ROWS, TOTAL))]


def test_a_failed_location_is_tried_last_by_the_next_endpoint(serve, transport):
    broken, good = serve(Rows(TOTAL, break_after=0)), serve(Rows(TOTAL))
    t, avoid = transport(broken.url, retries=0), set()
    for _ in range(2):
        assert values(failover_batches(t, TICKET.encode(), [broken.url, good.url], avoid)) \
            == list(range(TOTAL))
    assert broken.calls["do_get"] == 1 and good.calls["do_get"] == 2


@pytest.mark.parametrize("error, raised", [
    (flight.FlightUnauthorizedError, errors.PermissionDenied),
    (flight.FlightUnauthenticatedError, errors.AuthenticationFailed),
])
def test_a_refusal_is_not_failed_over(serve, transport, error, raised):
    """Another replica would refuse the same request: the refusal is the answer."""
    refusing, good = serve(Rows(TOTAL, break_after=0, error=error)), serve(Rows(TOTAL))
    with pytest.raises(raised):
        values(failover_batches(transport(refusing.url), TICKET.encode(),
                                [refusing.url, good.url]))
    assert good.calls["do_get"] == 0


def test_the_last_location_failing_is_the_error(serve, transport):
    first, second = serve(Rows(TOTAL, break_after=2)), serve(Rows(TOTAL, break_after=2))
    with pytest.raises(errors.ConnectionFailed, match="replica stopped after 2 batches"):
        values(failover_batches(transport(first.url), TICKET.encode(),
                                [first.url, second.url]))
    assert first.calls["do_get"] == 1 and second.calls["do_get"] == 1


def test_an_unavailable_replica_hands_over_without_retrying_it(serve, transport):
    """With another location left, an unavailable one is not retried (3 retries with
    backoff would cost seconds per dead replica); the last location keeps its retries."""
    refusing, good = serve(Rows(TOTAL, break_after=0)), serve(Rows(TOTAL))
    t = transport(refusing.url, retries=3)
    assert values(failover_batches(t, TICKET.encode(), [refusing.url, good.url])) \
        == list(range(TOTAL))
    assert refusing.calls["do_get"] == 1 and good.calls["do_get"] == 1
    alone = serve(Rows(TOTAL, break_after=0))
    with pytest.raises(errors.ConnectionFailed):
        values(failover_batches(transport(alone.url, retries=2), TICKET.encode(), [alone.url]))
    assert alone.calls["do_get"] == 3
