"""Uploads: the commit marker follows the last batch only; a broken upload is never retried.

The server (servers.Uploads) records what each ``do_put`` delivered and whether the
stream ended with the commit marker, the sign for the bridge to store the table.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa
import pytest

from flight_client import errors
from flight_protocol.messages import UploadDescriptor
from tests.flight_client.transport.expected import TYPED, one_line
from tests.flight_client.transport.servers import (
    BATCH_ROWS,
    FLIGHT_ERRORS,
    SCHEMA,
    Upload,
    Uploads,
    rows,
)

COMMAND = UploadDescriptor("measurements", (("Image", 1),), explicit_commit=True).encode()
BATCHES = 10


def source(count: int = BATCHES, then: BaseException | None = None
           ) -> Iterator[pa.RecordBatch]:
    for i in range(count):
        yield rows(i * BATCH_ROWS, (i + 1) * BATCH_ROWS)
    if then is not None:
        raise then


def only_upload(server: Uploads) -> Upload:
    """The server's one upload, once it has seen the stream end."""
    assert server.calls["do_put"] == 1 and len(server.uploads) == 1
    upload = server.uploads[0]
    assert upload.finished.wait(10), "the server never saw the upload end"
    return upload


def test_a_whole_upload_is_committed(serve, transport):
    server = serve(Uploads())
    answer = transport(server.url).upload(COMMAND, SCHEMA, source())
    assert answer is not None and json.loads(answer)["rows"] == BATCHES * BATCH_ROWS
    upload = only_upload(server)
    assert upload.committed and upload.rows == BATCHES * BATCH_ROWS


@pytest.mark.parametrize("interruption", [RuntimeError("the source broke"), KeyboardInterrupt()],
                         ids=["exception", "ctrl-c"])
def test_an_interrupted_source_sends_no_commit(serve, transport, interruption):
    server = serve(Uploads())
    with pytest.raises(type(interruption)):
        transport(server.url, retries=3).upload(COMMAND, SCHEMA, source(3, then=interruption))
    upload = only_upload(server)
    assert not upload.committed and upload.rows <= 3 * BATCH_ROWS


def test_a_failing_progress_callback_sends_no_commit(serve, transport):
    server = serve(Uploads())
    seen: list[int] = []

    def on_batch(batch: pa.RecordBatch) -> None:
        seen.append(batch.num_rows)
        if len(seen) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        transport(server.url).upload(COMMAND, SCHEMA, source(), on_batch)
    assert not only_upload(server).committed and len(seen) == 4


def test_a_batch_of_another_schema_is_refused_and_not_committed(serve, transport):
    server = serve(Uploads())
    other = pa.record_batch([pa.array(["a"])], names=["x"])

    def mixed() -> Iterator[pa.RecordBatch]:
        yield from source(2)
        yield other

    with pytest.raises(errors.InvalidRequest, match="differs from the upload's"):
        transport(server.url).upload(COMMAND, SCHEMA, mixed())
    assert not only_upload(server).committed


@pytest.mark.parametrize("error", FLIGHT_ERRORS, ids=lambda e: e.__name__)
def test_a_server_failing_mid_upload_is_typed_and_never_retried(serve, transport, error):
    server = serve(Uploads(fail_after=2, error=error))
    with pytest.raises(errors.OmeroFlightError) as info:
        transport(server.url, retries=3).upload(COMMAND, SCHEMA, source())
    assert type(info.value) is TYPED[error] and one_line(info.value), info.value
    assert f"{error.__name__} after 2 batches" in str(info.value)
    assert not only_upload(server).committed


def test_an_unreachable_server_is_retried_while_opening(transport, caplog):
    from tests.processes import free_port

    with caplog.at_level("WARNING", logger="flight_client.transport"), \
            pytest.raises(errors.ConnectionFailed, match="cannot reach"):
        transport(f"grpc://127.0.0.1:{free_port()}", retries=2).upload(COMMAND, SCHEMA,
                                                                        source())
    assert len([r for r in caplog.records if "retry" in r.getMessage()]) == 2
