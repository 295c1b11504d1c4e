"""Tiny purpose-built Flight servers for the transport tests (as pyarrow's test_flight.py).

Each listens on 127.0.0.1 with a port the system picks, counts the calls it gets
and stands for one condition of a bridge: failing with a given Flight error class
(:class:`Failing`), holding calls past the client's deadline (:class:`Slow`),
streaming until the client cancels (:class:`Endless`), serving rows of a ticket
(:class:`Rows`), serving row lists as bridges with and without packed row lists do
(:class:`RowLists`), taking uploads (:class:`Uploads`) and signing in with tokens
(:class:`SigningIn`). :func:`certificate` makes a self-signed TLS certificate.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flight_protocol.messages import COMMIT_METADATA, RowRange, TableTicket, decode, encode_body

SCHEMA = pa.schema([("x", pa.int64())])
#: Every error class a Flight server can answer with.
FLIGHT_ERRORS = (flight.FlightUnavailableError, flight.FlightTimedOutError,
                 flight.FlightUnauthenticatedError, flight.FlightUnauthorizedError,
                 flight.FlightServerError, flight.FlightInternalError,
                 flight.FlightCancelledError)
#: Seconds a held call waits at most (a test releases it long before).
HOLD = 30.0
#: Rows in each batch the servers send.
BATCH_ROWS = 10


def rows(start: int, stop: int) -> pa.RecordBatch:
    return pa.record_batch([pa.array(range(start, stop), pa.int64())], schema=SCHEMA)


class Counting(flight.FlightServerBase):
    """A server that counts its calls by RPC name; ``url`` is where a client reaches it."""

    def __init__(self, location: str = "grpc://127.0.0.1:0", **options: Any) -> None:
        super().__init__(location, **options)
        self.scheme = location.split("://")[0]
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def count(self, rpc: str) -> int:
        with self._lock:
            self.calls[rpc] += 1
            return self.calls[rpc]

    def do_action(self, context, action):
        self.count("do_action")
        return iter([encode_body(status="ok")])

    def list_actions(self, context):
        self.count("list_actions")
        return [("health", "the answer is ok")]


class Failing(Counting):
    """Answers every call with ``error`` the first ``failures`` times, then normally; a
    ``do_get`` sends ``after`` batches before it fails."""

    def __init__(self, error: type[flight.FlightError], failures: int = 1_000_000,
                 after: int = 0) -> None:
        super().__init__()
        self.error, self.failures, self.after = error, failures, after

    def _fails(self, rpc: str) -> bool:
        return self.count(rpc) <= self.failures

    def _error(self, rpc: str) -> flight.FlightError:
        return self.error(f"{self.error.__name__} from {rpc} #{self.calls[rpc]}")

    def do_action(self, context, action):
        if self._fails("do_action"):
            raise self._error("do_action")
        return iter([encode_body(status="ok")])

    def get_flight_info(self, context, descriptor):
        if self._fails("get_flight_info"):
            raise self._error("get_flight_info")
        return flight.FlightInfo(SCHEMA, descriptor, [flight.FlightEndpoint(b"t", [])], -1, -1)

    def do_get(self, context, ticket):
        fails = self._fails("do_get")
        error = self._error("do_get")

        def batches():
            for i in range(self.after):
                yield rows(i * BATCH_ROWS, (i + 1) * BATCH_ROWS)
            if fails:
                raise error

        if fails and self.after == 0:
            raise error
        return flight.GeneratorStream(SCHEMA, batches())


class Slow(Counting):
    """Holds each call (after ``before`` batches of a ``do_get``) until :attr:`release` is
    set, as a bridge stuck on a slow OMERO does; shutting down releases it."""

    def __init__(self, before: int = 0) -> None:
        super().__init__()
        self.before = before
        self.release = threading.Event()

    def do_action(self, context, action):
        self.count("do_action")
        self.release.wait(HOLD)
        return iter([encode_body(status="ok")])

    def do_get(self, context, ticket):
        self.count("do_get")

        def batches():
            for i in range(self.before):
                yield rows(i * BATCH_ROWS, (i + 1) * BATCH_ROWS)
            self.release.wait(HOLD)
            yield rows(0, BATCH_ROWS)

        if self.before == 0:
            self.release.wait(HOLD)
        return flight.GeneratorStream(SCHEMA, batches())

    def shutdown(self) -> None:
        self.release.set()
        super().shutdown()


class Endless(Counting):
    """Streams batches until the client cancels the call, then sets :attr:`cancelled`."""

    def __init__(self) -> None:
        super().__init__()
        self.cancelled = threading.Event()
        self.sent = 0

    def do_get(self, context, ticket):
        self.count("do_get")

        def batches():
            while not context.is_cancelled():
                self.sent += 1
                yield rows(0, BATCH_ROWS)
                self.cancelled.wait(0.01)
            self.cancelled.set()

        return flight.GeneratorStream(SCHEMA, batches())


class Rows(Counting):
    """Serves the rows ``range(total)`` a :class:`TableTicket`'s row range selects, in
    batches of :data:`BATCH_ROWS`; with ``break_after`` it fails with ``error`` after that
    many batches. :attr:`tickets` holds every ticket received."""

    def __init__(self, total: int, break_after: int | None = None,
                 error: type[flight.FlightError] = flight.FlightUnavailableError) -> None:
        super().__init__()
        self.total, self.break_after, self.error = total, break_after, error
        self.tickets: list[TableTicket] = []

    def do_get(self, context, ticket):
        self.count("do_get")
        if self.break_after == 0:
            raise self.error("replica stopped after 0 batches")
        request = decode(ticket.ticket, "ticket")
        assert isinstance(request, TableTicket)
        self.tickets.append(request)
        span = request.rows if isinstance(request.rows, RowRange) else RowRange()
        stop = self.total if span.stop is None else min(span.stop, self.total)

        def batches():
            for n, start in enumerate(range(span.start, stop, BATCH_ROWS)):
                if n == self.break_after:
                    raise self.error(f"replica stopped after {n} batches")
                yield rows(start, min(start + BATCH_ROWS, stop))

        return flight.GeneratorStream(SCHEMA, batches())


class RowLists(Counting):
    """A bridge answering ``version`` with the ``features`` given (None: none listed, as
    bridges before packed row lists) and serving a row list's rows as ``x``; a packed
    list refused as such bridges refused it. :attr:`raw` holds every ticket's JSON."""

    def __init__(self, features: list[str] | None) -> None:
        super().__init__()
        self.features = features
        self.raw: list[dict[str, Any]] = []

    def do_action(self, context, action):
        self.count(action.type)
        if action.type == "version":
            extra = {} if self.features is None else {"features": self.features}
            return iter([encode_body(server="0", protocol=1, backend="tiny", **extra)])
        raise flight.FlightServerError("unknown action")

    def do_get(self, context, ticket):
        self.count("do_get")
        body = json.loads(ticket.ticket)
        self.raw.append(body)
        if not isinstance(body["rows"], list) and self.features is None:
            raise flight.FlightServerError(
                "rows range has unknown field(s): 'int64_le_hex'",
                extra_info=json.dumps({"code": "invalid_argument"}).encode())
        request = decode(ticket.ticket, "ticket")
        assert isinstance(request, TableTicket) and isinstance(request.rows, tuple)
        return flight.RecordBatchStream(pa.table({"x": pa.array(request.rows, pa.int64())}))


@dataclass
class Upload:
    """What a server saw of one ``do_put``."""

    rows: int = 0
    committed: bool = False
    finished: threading.Event = field(default_factory=threading.Event)


class Uploads(Counting):
    """Takes ``do_put`` streams and records each (:attr:`uploads`); with ``fail_after`` it
    fails with ``error`` once it has read that many batches. It answers only a stream that
    ended with the commit marker."""

    def __init__(self, fail_after: int | None = None,
                 error: type[flight.FlightError] = flight.FlightUnavailableError) -> None:
        super().__init__()
        self.fail_after, self.error = fail_after, error
        self.uploads: list[Upload] = []

    def do_put(self, context, descriptor, reader, writer):
        self.count("do_put")
        upload = Upload()
        self.uploads.append(upload)
        batches = 0
        try:
            while True:
                try:
                    chunk = reader.read_chunk()
                except StopIteration:
                    break
                if chunk.data is not None:
                    batches += 1
                    upload.rows += chunk.data.num_rows
                    if batches == self.fail_after:
                        raise self.error(f"{self.error.__name__} after {batches} batches")
                meta = chunk.app_metadata
                if meta is not None and meta.to_pybytes() == COMMIT_METADATA:
                    upload.committed = True
            if upload.committed:
                writer.write(pa.py_buffer(encode_body(rows=upload.rows)))
        finally:
            upload.finished.set()


class _Bearer(flight.ServerMiddleware):
    def __init__(self, token: str) -> None:
        self.token = token

    def sending_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}


class _SignInMiddleware(flight.ServerMiddlewareFactory):
    def __init__(self) -> None:
        self.server: SigningIn | None = None

    def start_call(self, info, headers):
        assert self.server is not None
        auth = (headers.get("authorization") or [""])[0]
        if auth.startswith("Basic "):
            return _Bearer(self.server.sign_in())
        if auth != f"Bearer {self.server.token}":
            raise flight.FlightUnauthenticatedError("token refused")
        return None


class _NoHandshake(flight.ServerAuthHandler):
    """Lets the handshake through: the middleware signs in (as pyarrow's test_flight.py)."""

    def authenticate(self, outgoing, incoming):
        pass

    def is_valid(self, token):
        return ""


class SigningIn(Counting):
    """Signs in any Basic credentials with a new bearer token; :meth:`expire` makes the
    current token invalid, as a bridge restarted with a new signing key does."""

    def __init__(self) -> None:
        factory = _SignInMiddleware()
        super().__init__(auth_handler=_NoHandshake(), middleware={"auth": factory})
        factory.server = self
        self.token = ""
        #: Give tokens out but accept none (a bridge whose clock is far off).
        self.refuse_all = False

    def sign_in(self) -> str:
        token = f"token-{self.count('sign_in')}"
        if not self.refuse_all:
            self.token = token
        return token

    def expire(self) -> None:
        self.token = "expired"


def certificate(folder: Path, name: str, subject_alt_name: str = "IP:127.0.0.1"
                ) -> tuple[bytes, bytes]:
    """A self-signed certificate and its key (PEM) for ``subject_alt_name``, made by openssl
    (an EC key: quick to make on a busy machine)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                    "-subj", "/CN=omero-flight test", "-addext",
                    f"subjectAltName={subject_alt_name}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert.read_bytes(), key.read_bytes()
