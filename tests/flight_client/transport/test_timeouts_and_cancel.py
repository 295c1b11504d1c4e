"""The deadline a transport is given, and cancelling a read the caller stops early.

The servers hold their calls on an event the test releases, so nothing here
depends on how long anything takes (timings are measured in bench/, not asserted).
"""

from __future__ import annotations

import threading

import pytest

from flight_client import errors
from tests.flight_client.transport.expected import one_line
from tests.flight_client.transport.servers import BATCH_ROWS, Endless, Slow

DEADLINE = 0.3  # seconds; the servers hold calls far longer (servers.HOLD)


def test_a_slow_action_times_out_and_is_not_retried(serve, transport):
    server = serve(Slow())
    with pytest.raises(errors.ServerBusy, match="did not answer in time") as info:
        transport(server.url, timeout=DEADLINE, retries=3).action("health")
    assert one_line(info.value) and server.calls["do_action"] == 1


def test_a_stream_that_never_starts_times_out(serve, transport):
    server = serve(Slow())
    with pytest.raises(errors.ServerBusy, match="did not answer in time"):
        transport(server.url, timeout=DEADLINE, retries=3).open_stream(b"t")
    assert server.calls["do_get"] == 1


def test_the_deadline_covers_the_whole_stream(serve, transport):
    server = serve(Slow(before=2))
    received = []
    with pytest.raises(errors.ServerBusy, match="did not answer in time"):
        for batch in transport(server.url, timeout=DEADLINE, retries=3).stream(b"t"):
            received.append(batch.num_rows)
    assert received == [BATCH_ROWS] * 2 and server.calls["do_get"] == 1


def test_without_a_deadline_a_slow_call_is_waited_for(serve, transport):
    server = serve(Slow())
    t = transport(server.url, timeout=None)
    answers: list[object] = []
    caller = threading.Thread(target=lambda: answers.append(t.action("health")))
    caller.start()
    while server.calls["do_action"] == 0 and caller.is_alive():
        caller.join(0.01)
    server.release.set()
    caller.join(30)
    assert answers == [{"v": 1, "status": "ok"}]


def test_a_read_stopped_early_cancels_the_call(serve, transport):
    server = serve(Endless())
    batches = transport(server.url).stream(b"t")
    assert [next(batches).num_rows for _ in range(2)] == [BATCH_ROWS] * 2
    batches.close()
    assert server.cancelled.wait(10), "the server never saw the call cancelled"
    assert server.calls["do_get"] == 1


def test_a_read_dropped_in_a_loop_cancels_the_call(serve, transport):
    """A caller that leaves its loop (an exception, a break) and drops the stream."""
    server = serve(Endless())

    def first_rows() -> int:
        for batch in transport(server.url).stream(b"t"):
            return batch.num_rows
        return 0

    assert first_rows() == BATCH_ROWS
    assert server.cancelled.wait(10), "the server never saw the call cancelled"


def test_stopping_cancels_even_while_the_reader_lives_on(serve, transport):
    """The transport cancels the call itself rather than leaving it to the garbage
    collector: here something else (a traceback in a notebook, another interpreter's
    collector) still holds the Flight reader when the caller stops."""
    server = serve(Endless())
    batches = transport(server.url).stream(b"t")
    next(batches)
    reader = batches.gi_frame.f_locals["reader"]  # what outlives the stream here
    try:
        batches.close()
        assert server.cancelled.wait(10), "the server never saw the call cancelled"
    finally:
        reader.cancel()  # lets the server stop if the transport did not
