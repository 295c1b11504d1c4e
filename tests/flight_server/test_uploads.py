"""Uploads that fail or disconnect leave nothing behind; commits are explicit when asked."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flight_protocol.messages import COMMIT_METADATA, UploadDescriptor
from tests.flight_server.wire import error_code


def leftovers(bridge) -> list[str]:
    spool = glob.glob(os.path.join(tempfile.gettempdir(), "omero-flight-spool-*"))
    return sorted(os.listdir(bridge.store.tmp)) + spool


def table_names(bridge) -> list[str]:
    return [t.file.name for t in bridge.store.list_tables(bridge.store.lookup_caller("root"))]


def wait_clean(bridge, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while leftovers(bridge) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers(bridge) == []


def batch(i: int, strings: bool = True) -> pa.RecordBatch:
    data = {"x": pa.array(range(i * 1000, (i + 1) * 1000))}
    if strings:
        data["s"] = pa.array([f"row {j}" for j in range(1000)])
    return pa.record_batch(data)


def put(client, options, name: str, explicit: bool):
    descriptor = flight.FlightDescriptor.for_command(
        UploadDescriptor(name, explicit_commit=explicit).encode())
    return client.do_put(descriptor, batch(0).schema, options=options)


def test_explicit_commit_stores_the_table(connect, bridge):
    client, options = connect("alice")
    writer, reader = put(client, options, "committed", explicit=True)
    with writer:
        for i in range(3):
            writer.write_batch(batch(i))
        writer.write_metadata(COMMIT_METADATA)
        writer.done_writing()
        assert b'"rows":3000' in reader.read().to_pybytes()
    assert "committed" in table_names(bridge)


def test_stream_closed_without_commit_leaves_nothing(connect, bridge):
    client, options = connect("alice")
    writer, _ = put(client, options, "abandoned", explicit=True)
    with pytest.raises(flight.FlightServerError) as info:
        with writer:
            writer.write_batch(batch(0))
            writer.write_batch(batch(1))
            writer.done_writing()
            writer.close()  # the client gives up; the server sees a clean end of stream
    assert error_code(info.value) == "invalid_argument" and "commit marker" in str(info.value)
    assert "abandoned" not in table_names(bridge)
    wait_clean(bridge)


def test_bad_batch_mid_stream_leaves_nothing(connect, bridge):
    client, options = connect("alice")
    schema = pa.schema([("n", pa.int64())])
    descriptor = flight.FlightDescriptor.for_command(UploadDescriptor("half").encode())
    writer, _ = client.do_put(descriptor, schema, options=options)
    with pytest.raises(flight.FlightError):
        with writer:
            writer.write_batch(pa.record_batch([pa.array([1, 2])], schema=schema))
            writer.write_batch(pa.record_batch([pa.array([None, 2], pa.int64())], schema=schema))
            writer.done_writing()
    assert "half" not in table_names(bridge)
    wait_clean(bridge)


CLIENT = textwrap.dedent("""
    import os, sys
    import pyarrow as pa, pyarrow.flight as flight
    from flight_protocol.messages import UploadDescriptor
    url, user, password, strings = sys.argv[1:5]
    client = flight.FlightClient(url)
    options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(user, password)])
    descriptor = flight.FlightDescriptor.for_command(UploadDescriptor("killed").encode())
    data = {"x": pa.array(range(50_000))}
    if strings == "1":
        data["s"] = pa.array(["text"] * 50_000)
    b = pa.record_batch(data)
    writer, _ = client.do_put(descriptor, b.schema, options=options)
    for _ in range(5):
        writer.write_batch(b)
    print("sent", flush=True)
    os._exit(3)  # vanish mid-stream: no close, no end of stream
""")


@pytest.mark.parametrize("strings", ["1", "0"], ids=["spooled", "direct"])
def test_client_that_vanishes_mid_stream_leaves_nothing(bridge, strings):
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, bridge.url, "alice", bridge.passwords["alice"], strings],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 3 and "sent" in done.stdout, done.stderr
    wait_clean(bridge)
    assert "killed" not in table_names(bridge)
