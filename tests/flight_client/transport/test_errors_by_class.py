"""Each Flight error class, from a tiny server: the typed client error, and retries by class."""

from __future__ import annotations

import pyarrow.flight as flight
import pytest

from flight_client import errors
from flight_protocol.messages import ACTION_REGISTER_TABLE
from tests.flight_client.transport.expected import RETRIED, TYPED, one_line
from tests.flight_client.transport.servers import BATCH_ROWS, FLIGHT_ERRORS, Failing

RETRIES = 2


def _calls(error: type[flight.FlightError]) -> int:
    """How many calls the server gets for one failing request with RETRIES retries."""
    return 1 + RETRIES if error in RETRIED else 1


@pytest.mark.parametrize("error", FLIGHT_ERRORS, ids=lambda e: e.__name__)
def test_idempotent_action(serve, transport, error):
    server = serve(Failing(error))
    with pytest.raises(errors.OmeroFlightError) as info:
        transport(server.url, retries=RETRIES).action("health")
    assert type(info.value) is TYPED[error] and one_line(info.value), info.value
    assert server.calls["do_action"] == _calls(error)
    assert f"{error.__name__} from do_action #{_calls(error)}" in str(info.value)


@pytest.mark.parametrize("error", FLIGHT_ERRORS, ids=lambda e: e.__name__)
def test_flight_info(serve, transport, error):
    server = serve(Failing(error))
    with pytest.raises(errors.OmeroFlightError) as info:
        transport(server.url, retries=RETRIES).flight_info(b"{}")
    assert type(info.value) is TYPED[error] and one_line(info.value), info.value
    assert server.calls["get_flight_info"] == _calls(error)


@pytest.mark.parametrize("error", FLIGHT_ERRORS, ids=lambda e: e.__name__)
def test_stream_before_its_schema(serve, transport, error):
    server = serve(Failing(error))
    with pytest.raises(errors.OmeroFlightError) as info:
        transport(server.url, retries=RETRIES).open_stream(b"t")
    assert type(info.value) is TYPED[error] and one_line(info.value), info.value
    assert server.calls["do_get"] == _calls(error)


@pytest.mark.parametrize("error", FLIGHT_ERRORS, ids=lambda e: e.__name__)
def test_stream_broken_after_batches_is_not_retried(serve, transport, error):
    """Once batches arrived, the transport does not start the read again (a replica may
    take over: test_failover.py); the batches before the break were delivered."""
    server = serve(Failing(error, after=3))
    received = []
    with pytest.raises(errors.OmeroFlightError) as info:
        for batch in transport(server.url, retries=RETRIES).stream(b"t"):
            received.append(batch.num_rows)
    assert received == [BATCH_ROWS] * 3
    assert type(info.value) is TYPED[error] and one_line(info.value), info.value
    assert server.calls["do_get"] == 1


@pytest.mark.parametrize("error", RETRIED, ids=lambda e: e.__name__)
def test_an_action_that_may_change_something_is_never_retried(serve, transport, error):
    server = serve(Failing(error))
    with pytest.raises(TYPED[error]):
        transport(server.url, retries=RETRIES).action(ACTION_REGISTER_TABLE, uri="/t")
    assert server.calls["do_action"] == 1


@pytest.mark.parametrize("error", RETRIED, ids=lambda e: e.__name__)
def test_retried_call_succeeds_when_the_server_recovers(serve, transport, error):
    server = serve(Failing(error, failures=2))
    t = transport(server.url, retries=3)
    assert t.action("health") == {"v": 1, "status": "ok"}
    assert server.calls["do_action"] == 3
    schema, batches = t.open_stream(b"t")
    assert schema.names == ["x"] and list(batches) == []
    assert server.calls["do_get"] == 3


def test_no_retries_means_one_call(serve, transport):
    server = serve(Failing(flight.FlightUnavailableError))
    with pytest.raises(errors.ConnectionFailed):
        transport(server.url, retries=0).action("health")
    assert server.calls["do_action"] == 1


def test_retries_are_logged_and_bounded(serve, transport, caplog):
    server = serve(Failing(flight.FlightUnavailableError))
    with caplog.at_level("WARNING", logger="flight_client.transport"), \
            pytest.raises(errors.ConnectionFailed):
        transport(server.url, retries=RETRIES).action("health")
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == RETRIES and retries[-1].endswith(f"retry {RETRIES}/{RETRIES} in 0.0s")
