"""Every Flight call the client makes: auth header, error translation, retries.

Nothing outside this module touches ``pyarrow.flight`` error classes. Errors are
translated in one place, :func:`translate`, using the JSON ``{"code",
"message"}`` the bridge puts in ``extra_info``. Whether a failed call runs again
is decided in one place too, :func:`retryable`, by the Flight error's class and
the kind of call (:data:`RETRYABLE`): an unreachable, busy or stopping bridge
is retried with exponential backoff a bounded number of times for reads and
idempotent actions; a ``do_put`` only while it is being opened, never once data
was sent; a ``do_get`` only until its schema arrived.

Uploads go through :meth:`Transport.upload`, the only code that touches a
Flight writer: the bridge stores what it received only when the stream ends
with the commit marker (``explicit_commit``), which is written after the
source is exhausted without error. Any exception before that, in the source or
the transport, KeyboardInterrupt included, ends the stream without the marker,
so the bridge discards everything; a client that dies (a signal, SIGKILL)
drops the connection, which the bridge discards the same way.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.flight as flight

from flight_client import errors
from flight_protocol.messages import (
    ACTION_FILE_INFO,
    ACTION_HEALTH,
    ACTION_LIST_TABLES,
    ACTION_LOGOUT,
    ACTION_TABLE_COLUMNS,
    ACTION_TABLE_SIZE,
    ACTION_VERSION,
    ACTION_WHOAMI,
    COMMIT_METADATA,
    PACKED_ROWS,
    ProtocolError,
    TableTicket,
    decode_body,
    encode_body,
)

LOGGER = logging.getLogger(__name__)

LOGOUT_TIMEOUT = 2.0  # seconds; closing must not hang on a bridge that went away
T = TypeVar("T")

#: Endpoint location meaning "the server you asked" (Flight's reuse-connection URI).
_REUSE_URIS = ("arrow-flight-reuse-connection://?", "arrow-flight-reuse-connection://")


#: Flight status details pyarrow's ``get_schema`` leaves in an OSError's text (it raises
#: OSError instead of the Flight error, apache/arrow#43556), and the error each means.
_FLIGHT_DETAILS = {
    "Unauthenticated": flight.FlightUnauthenticatedError,
    "Unauthorized": flight.FlightUnauthorizedError,
    "Unavailable": flight.FlightUnavailableError,
    "TimedOut": flight.FlightTimedOutError,
    "Cancelled": flight.FlightCancelledError,
    "Internal": flight.FlightInternalError,
    "Failed": flight.FlightServerError,
}
_DETAIL = re.compile(r"\. Detail: (" + "|".join(_FLIGHT_DETAILS) + r")\b")


def _as_flight_error(exc: OSError) -> flight.FlightError | None:
    """The Flight error an OSError from ``get_schema`` stands for, or None if it is not one."""
    text = str(exc)
    found = _DETAIL.search(text)
    if found is None:
        return None
    return _FLIGHT_DETAILS[found.group(1)](text[: found.start()])


def _json_detail(text: str) -> tuple[str, str] | None:
    """``{"code", "message"}`` at the start of an error's text (the bridge's get_schema)."""
    start = text.find('{"code"')
    if start < 0 or start > 80:
        return None
    try:
        info, _ = json.JSONDecoder().raw_decode(text, start)
    except ValueError:
        return None
    if isinstance(info, dict) and isinstance(info.get("code"), str) and "message" in info:
        return info["code"], str(info["message"])
    return None


def _server_detail(exc: BaseException) -> tuple[str | None, str]:
    """The bridge's (code, message), or (None, the gRPC text without its debug noise)."""
    extra = getattr(exc, "extra_info", None)
    if extra:
        try:
            info = json.loads(extra)
            if isinstance(info, dict) and "message" in info:
                return info.get("code"), str(info["message"])
        except (ValueError, UnicodeDecodeError):
            pass
    text = str(exc)
    detail = _json_detail(text)
    if detail is not None:
        return detail
    for noise in (". gRPC client debug context", ". Detail:", "\ngRPC client debug context"):
        text = text.split(noise)[0]
    return None, text.strip()


def translate(exc: BaseException, where: str) -> errors.OmeroFlightError:
    """Map a Flight or Arrow error to the client's exception tree."""
    code, message = _server_detail(exc)
    if code in errors.BY_CODE:
        return errors.BY_CODE[code](message, code=code)
    if isinstance(exc, flight.FlightUnauthenticatedError):
        cls: type[errors.OmeroFlightError] = errors.AuthenticationFailed
    elif isinstance(exc, flight.FlightUnauthorizedError):
        cls = errors.PermissionDenied
    elif isinstance(exc, flight.FlightUnavailableError):
        tls = _tls_failure(message, where)
        if tls is not None:
            return tls
        return errors.ConnectionFailed(f"cannot reach the bridge at {where}: {message}")
    elif isinstance(exc, flight.FlightTimedOutError):
        return errors.ServerBusy(f"the bridge at {where} did not answer in time: {message}")
    elif isinstance(exc, flight.FlightCancelledError):
        cls = errors.ServerBusy
    elif isinstance(exc, pa.ArrowKeyError | KeyError):
        cls = errors.NotFound
    elif isinstance(exc, pa.ArrowInvalid | pa.ArrowTypeError | pa.ArrowNotImplementedError):
        cls = errors.InvalidRequest
    else:
        cls = errors.ServerError
    return cls(message, code=code)


def _flight_error(exc: BaseException) -> flight.FlightError | None:
    """The Flight error ``exc`` is or stands for (see :func:`_as_flight_error`), else None."""
    if isinstance(exc, flight.FlightError):
        return exc
    if isinstance(exc, OSError) and not isinstance(exc, pa.ArrowException):
        return _as_flight_error(exc)
    return None


def _client_error(exc: Exception, where: str) -> errors.OmeroFlightError | None:
    """The client error for an exception out of a Flight call, None to let it through."""
    if isinstance(exc, errors.OmeroFlightError):
        return exc
    if isinstance(exc, ProtocolError):
        return errors.InvalidRequest(str(exc))
    if isinstance(exc, flight.FlightError | pa.ArrowException):
        return translate(exc, where)
    flight_exc = _flight_error(exc)
    return None if flight_exc is None else translate(flight_exc, where)


@contextmanager
def translate_errors(where: str) -> Iterator[None]:
    """Turn errors raised by Flight calls inside the block into client errors."""
    try:
        yield
    except Exception as exc:
        err = _client_error(exc, where)
        if err is None or err is exc:
            raise
        raise err from exc


def _validated(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A received batch, checked whole: Arrow's IPC reader checks only the buffers' sizes,
    and string offsets that point outside their data (a broken or hostile bridge) would
    make the conversion to pandas read other memory, or crash the process."""
    try:
        batch.validate(full=True)
    except (pa.ArrowInvalid, pa.ArrowException) as exc:
        raise errors.ServerError(f"the bridge sent a malformed record batch: {exc}") from None
    return batch


def _abort(writer: flight.FlightStreamWriter) -> None:
    """End an upload stream without its commit marker: the bridge discards what it got."""
    try:
        writer.close()
    except Exception:  # noqa: BLE001 - the bridge says "no commit marker"; the first error wins
        LOGGER.debug("closing an aborted upload", exc_info=True)


#: Words in gRPC's message for a host name that does not resolve (retrying cannot help).
_UNKNOWN_HOST = ("domain name not found", "dns resolution failed", "lookup error",
                 "name or service not known", "nodename nor servname")
#: Words in gRPC's message for a TLS handshake that failed (an untrusted certificate).
_TLS_WORDS = ("ssl", "handshake")
#: Seconds the TLS probe of a plain location may take.
TLS_PROBE_TIMEOUT = 2.0


def _other_scheme(location: str) -> str:
    """``grpc://h:p`` <-> ``grpc+tls://h:p``."""
    scheme, sep, rest = location.partition("://")
    return ("grpc://" if scheme == "grpc+tls" else "grpc+tls://") + rest if sep else location


def _tls_failure(message: str, where: str) -> errors.ConnectionFailed | None:
    """The error for a TLS connection that could not be set up, None if ``message`` is not one."""
    text = message.lower()
    if "wrong version number" in text and where.startswith("grpc+tls:"):
        return errors.ConnectionFailed(
            f"the bridge at {where} does not speak TLS (its answer is plain gRPC): "
            f"connect with {_other_scheme(where)} instead")
    if "not in peer certificate" in text:
        return errors.ConnectionFailed(
            f"the certificate of the bridge at {where} is for another host name ({message}); "
            "connect with a name the certificate lists")
    if any(words in text for words in _TLS_WORDS):
        return errors.ConnectionFailed(
            f"TLS handshake with the bridge at {where} failed ({message}); is it a TLS "
            "server, and is its certificate trusted (OMERO_FLIGHT_TLS_ROOT_CERTS)?")
    return None


def _speaks_tls(location: str) -> bool:
    """Whether the server at a plain ``grpc://`` location completes a TLS handshake."""
    import socket
    import ssl
    from urllib.parse import urlsplit

    parts = urlsplit(location)
    if parts.hostname is None or parts.port is None:
        return False
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only asking whether it speaks TLS at all
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((parts.hostname, parts.port), TLS_PROBE_TIMEOUT) as raw, \
                context.wrap_socket(raw, server_hostname=parts.hostname):
            return True
    except (OSError, ssl.SSLError):
        return False


# -- retry policy: the one place that decides whether a failed call runs again ------------------
#: Kinds of call, by what running one again can do.
READ = "read"  # get_flight_info, get_schema, list_actions, the sign-in, a do_get to its schema
ACTION = "action"  # an action in IDEMPOTENT_ACTIONS
OPEN = "open"  # opening a do_put: nothing sent, and the bridge keeps nothing without the commit
ONCE = "once"  # any other action (it may change something): never run twice

#: Actions that change nothing on the bridge, so running one twice is harmless.
IDEMPOTENT_ACTIONS = frozenset({ACTION_HEALTH, ACTION_VERSION, ACTION_WHOAMI, ACTION_TABLE_SIZE,
                                ACTION_TABLE_COLUMNS, ACTION_FILE_INFO, ACTION_LIST_TABLES})

_AGAIN = frozenset({READ, ACTION, OPEN})
_NEVER: frozenset[str] = frozenset()

#: Flight error class -> the kinds of call that are retried after it. A do_put is never
#: retried once data was sent (:meth:`Transport.upload` does not retry), nor a do_get once its
#: schema arrived (another location takes over: ``flight_client.reading.failover_batches``).
RETRYABLE: dict[type[flight.FlightError], frozenset[str]] = {
    # unreachable, restarting, or answering "unavailable" (OMERO is down): another try may work
    flight.FlightUnavailableError: _AGAIN,
    # a bridge that stops cancels the calls it is running
    flight.FlightCancelledError: _AGAIN,
    # the deadline passed: another try would wait as long again
    flight.FlightTimedOutError: _NEVER,
    # a refused token is signed in again once instead (Transport.call)
    flight.FlightUnauthenticatedError: _NEVER,
    flight.FlightUnauthorizedError: _NEVER,
    # the bridge refused the request, or failed at it: the same request fails the same way
    flight.FlightServerError: _NEVER,
    flight.FlightInternalError: _NEVER,
}


def retryable(exc: BaseException, kind: str) -> bool:
    """Whether a call of ``kind`` that raised ``exc`` may run again (:data:`RETRYABLE`)."""
    flight_exc = _flight_error(exc)
    if flight_exc is None:
        return False  # not a Flight status: a client-side error, the same every time
    for cls in type(flight_exc).__mro__:
        if cls in RETRYABLE:
            return kind in RETRYABLE[cls]
    return False


def _unmendable(exc: BaseException, location: str) -> errors.ConnectionFailed | None:
    """The final error for an unavailable bridge no retry can mend (a TLS failure, an unknown
    host, plain gRPC to a TLS bridge), else None."""
    flight_exc = _flight_error(exc)
    if not isinstance(flight_exc, flight.FlightUnavailableError):
        return None
    code, message = _server_detail(flight_exc)
    if code is not None:
        return None  # the bridge answered: it is reachable
    tls = _tls_failure(message, location)
    if tls is not None:
        return tls
    text = message.lower()
    if any(words in text for words in _UNKNOWN_HOST):
        return errors.ConnectionFailed(
            f"cannot reach the bridge at {location}: its host name is unknown (check the "
            "spelling of --server / OMERO_FLIGHT_URL)")
    if "socket closed" in text and location.startswith(("grpc://", "grpc+tcp://")) \
            and _speaks_tls(location):
        return errors.ConnectionFailed(
            f"the bridge at {location} speaks TLS: connect with {_other_scheme(location)} "
            "(and --tls-root-certs / OMERO_FLIGHT_TLS_ROOT_CERTS for a private certificate)")
    return None


class Transport:
    """One bridge: a Flight client per location, the bearer header and the retry policy."""

    def __init__(
        self,
        location: str,
        *,
        tls_root_certs: bytes | None = None,
        timeout: float | None = None,
        retries: int = 3,
        backoff: float = 0.2,
    ) -> None:
        self.location = location
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._tls_root_certs = tls_root_certs
        self._clients: dict[str, flight.FlightClient] = {}
        self._lock = threading.Lock()
        self._header: tuple[bytes, bytes] | None = None
        self._credentials: tuple[str, str] | None = None
        self._closed = False
        #: A token adopted from another connection: closing does not end its sign-in.
        self._borrowed = False
        #: Whether the bridge reads packed row lists (its ``version`` features); None: not
        #: asked yet.
        self._packed_rows: bool | None = None

    # -- plumbing ---------------------------------------------------------------------------
    def _client(self, location: str | None = None) -> flight.FlightClient:
        if self._closed:
            raise errors.ConnectionClosed("this connection has been shut down; open a new one")
        uri = self.resolve(location)
        with self._lock:
            client = self._clients.get(uri)
            if client is None:
                kwargs: dict[str, Any] = {}
                if self._tls_root_certs:
                    kwargs["tls_root_certs"] = self._tls_root_certs
                with translate_errors(uri):
                    client = flight.FlightClient(uri, **kwargs)
                self._clients[uri] = client
            return client

    @property
    def token(self) -> tuple[bytes, bytes] | None:
        """The bearer header; every replica sharing the signing key accepts it."""
        return self._header

    def adopt_token(self, header: tuple[bytes, bytes]) -> None:
        """Call with another connection's bearer header (a Dask worker's reads).

        Closing this transport then leaves the sign-in to its owner; there is no
        password to log in again with, so an expired token fails the call.
        """
        self._header = (bytes(header[0]), bytes(header[1]))
        self._credentials = None
        self._borrowed = True

    def keep_sign_in(self) -> None:
        """Closing this transport then leaves its sign-in open until the token expires
        (a lazy Dask read's workers still use the token after the planning call)."""
        self._borrowed = True

    def resolve(self, location: str | None) -> str:
        """The URL a location means: this transport's own for none or "reuse connection"."""
        return self.location if location in (None, "", *_REUSE_URIS) else location

    def options(self) -> flight.FlightCallOptions:
        headers = [self._header] if self._header else []
        return flight.FlightCallOptions(headers=headers, timeout=self.timeout)

    def call(self, fn: Callable[[], T], kind: str = READ, retries: int | None = None) -> T:
        """Run one Flight call with translation, one re-login on expiry, and the retries
        :func:`retryable` allows for its ``kind`` (with exponential backoff), at most
        ``retries`` of them (default: the transport's)."""
        retries = self.retries if retries is None else retries
        delay = self.backoff
        relogged = False
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:
                err = _client_error(exc, self.location)
                if err is None:
                    raise
                if isinstance(err, errors.AuthenticationFailed) and not relogged \
                        and self._credentials is not None and self._header is not None:
                    LOGGER.info("bridge token refused; logging in again")
                    relogged = True
                    self.authenticate(*self._credentials)
                    continue
                final = _unmendable(exc, self.location)
                if final is not None:
                    raise final from exc
                if retryable(exc, kind) and attempt < retries:
                    attempt += 1
                    LOGGER.warning("%s; retry %d/%d in %.1fs", err, attempt, retries, delay)
                    time.sleep(delay)
                    delay *= 2
                    continue
                if err is exc:
                    raise
                raise err from exc

    # -- calls ------------------------------------------------------------------------------
    def authenticate(self, username: str, password: str) -> None:
        """Basic-auth handshake; the returned bearer header goes on every later call."""
        client = self._client()

        def login() -> tuple[bytes, bytes]:
            opts = flight.FlightCallOptions(timeout=self.timeout)
            return client.authenticate_basic_token(username, password, opts)

        self._header = None
        try:
            self._header = self.call(login)
        except errors.ServerError as err:
            # An unreachable server fails the handshake stream with a bare internal
            # error; a plain call tells "unreachable" apart from a real server fault.
            if err.code is None:
                self._probe()
            raise
        self._credentials = (username, password)

    def _probe(self) -> None:
        """Raise :class:`ConnectionFailed` if the bridge cannot be reached at all."""
        client = self._client()
        try:
            self.call(lambda: client.list_actions(flight.FlightCallOptions(timeout=self.timeout)))
        except errors.ConnectionFailed:
            raise
        except errors.OmeroFlightError:
            pass  # reachable (it may want a login first)

    def action(self, name: str, **body: Any) -> dict[str, Any]:
        """Run an action with a JSON body and return its (single) JSON result."""
        client = self._client()
        payload = encode_body(**body)

        def run() -> list[bytes]:
            return [r.body.to_pybytes() for r in client.do_action((name, payload), self.options())]

        results = self.call(run, ACTION if name in IDEMPOTENT_ACTIONS else ONCE)
        with translate_errors(self.location):
            return decode_body(results[0] if results else b"", f"{name} result")

    def ticket_bytes(self, ticket: TableTicket) -> bytes:
        """``ticket`` encoded as this bridge reads it: a row list packed (``int64_le_hex``)
        when the bridge lists that among its ``version`` features, else as a JSON list,
        which bridges from before packed row lists read (asked once, at the first row
        list; an answer that fails to come is not kept)."""
        if not isinstance(ticket.rows, tuple):
            return ticket.encode()
        if self._packed_rows is None:
            try:
                features = self.action(ACTION_VERSION).get("features")
            except errors.OmeroFlightError:
                return ticket.encode(packed_rows=False)  # every bridge reads a JSON list
            self._packed_rows = isinstance(features, list) and PACKED_ROWS in features
        return ticket.encode(packed_rows=self._packed_rows)

    def flight_info(self, command: bytes) -> flight.FlightInfo:
        client = self._client()
        descriptor = flight.FlightDescriptor.for_command(command)
        return self.call(lambda: client.get_flight_info(descriptor, self.options()))

    def open_stream(self, ticket: bytes, location: str | None = None,
                    retries: int | None = None) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """Start one ``do_get``: its schema now (retried until it arrives, at most ``retries``
        times), its batches lazily."""
        client = self._client(location)

        def open_reader() -> flight.FlightStreamReader:
            reader = client.do_get(flight.Ticket(ticket), self.options())
            reader.schema  # noqa: B018 - forces the first message, so errors surface here
            return reader

        reader = self.call(open_reader, retries=retries)
        return reader.schema, self._batches(reader, location)

    def _batches(self, reader: flight.FlightStreamReader,
                 location: str | None) -> Iterator[pa.RecordBatch]:
        finished = False
        try:
            with translate_errors(location or self.location):
                while True:
                    try:
                        chunk = reader.read_chunk()
                    except StopIteration:
                        break
                    yield _validated(chunk.data)
            finished = True
        finally:
            if not finished:
                reader.cancel()

    def stream(self, ticket: bytes, location: str | None = None,
               retries: int | None = None) -> Iterator[pa.RecordBatch]:
        """Record batches of one ``do_get``; the call is retried until the schema arrived."""
        return self.open_stream(ticket, location, retries)[1]

    def upload(self, command: bytes, schema: pa.Schema, batches: Iterable[pa.RecordBatch],
               on_batch: Callable[[pa.RecordBatch], None] | None = None) -> bytes | None:
        """One ``do_put`` that the bridge commits only if every batch was sent.

        ``command`` is an upload descriptor with ``explicit_commit``. The commit
        marker follows the last batch; if the source (or ``on_batch``) raises
        anything, the stream is closed without it and the bridge keeps nothing.
        Returns the bridge's answer (app metadata), ``None`` if it sent none.
        """
        client = self._client()
        descriptor = flight.FlightDescriptor.for_command(command)
        writer, reader = self.call(lambda: client.do_put(descriptor, schema, self.options()),
                                   OPEN)
        try:
            for batch in batches:
                if not batch.schema.equals(schema):
                    raise errors.InvalidRequest(
                        f"a batch's schema ({batch.schema}) differs from the upload's ({schema})")
                try:
                    writer.write_batch(batch)
                except (flight.FlightError, pa.ArrowException, OSError) as exc:
                    # The bridge ended the call (it refused a value, or went away): its
                    # reason comes with the close.
                    raise self._closing_error(writer, exc) from None
                if on_batch is not None:
                    on_batch(batch)
        except BaseException:
            _abort(writer)
            raise
        try:
            writer.write_metadata(COMMIT_METADATA)
            writer.done_writing()
            answer = reader.read()
            writer.close()
        except (flight.FlightError, pa.ArrowException, OSError) as exc:
            raise self._closing_error(writer, exc) from None
        return None if answer is None else answer.to_pybytes()

    def _closing_error(self, writer: flight.FlightStreamWriter,
                       exc: BaseException) -> errors.OmeroFlightError:
        """The bridge's own error for a broken upload stream (from closing it), else ``exc``'s."""
        try:
            writer.close()
        except (flight.FlightError, pa.ArrowException, OSError) as closing:
            return translate(closing, self.location)
        return translate(exc, self.location)

    def _logout(self) -> None:
        """Best effort: end this sign-in on the bridge, which frees the user's OMERO session."""
        try:
            client = self._client()
            opts = flight.FlightCallOptions(headers=[self._header], timeout=LOGOUT_TIMEOUT)
            list(client.do_action(flight.Action(ACTION_LOGOUT, encode_body()), opts))
        except Exception:  # noqa: BLE001 - the bridge may be gone; closing goes on
            LOGGER.debug("logout at close failed", exc_info=True)

    def close(self) -> None:
        """Log out, then close every Flight client; later calls raise :class:`ConnectionClosed`."""
        if not self._closed and self._header is not None and not self._borrowed:
            self._logout()
        self._closed = True
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing must not raise at exit
                LOGGER.debug("error closing a Flight client", exc_info=True)

    @property
    def closed(self) -> bool:
        return self._closed
