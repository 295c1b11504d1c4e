"""The one place where backend and protocol errors become Flight errors.

Backends raise the small :class:`BridgeError` tree below; the protocol,
query and column modules raise ``ValueError`` subclasses of their own. The
service wraps every RPC in :func:`flight_errors`, which turns each into the
matching ``pyarrow.flight`` error with ``extra_info`` set to
``{"code": <protocol.ERROR_CODES entry>, "message": ...}`` as JSON. Anything
else is a bug: it is logged here with its traceback and the client gets
``internal`` with no detail, never the traceback or a server path. Every
message is cut to :data:`MAX_MESSAGE_CHARS` here, in :func:`flight_error`, so
no input echoed in it can grow a gRPC header past its limit.

``get_schema`` is special: pyarrow's server callback for it does not turn a
``FlightError`` into a Flight status (every other callback does), so the error
would reach the client untyped and with the server's traceback. The service
raises :func:`schema_refusal` there instead: an exception that Arrow maps to the
nearest gRPC status (``ValueError`` -> INVALID_ARGUMENT, ``KeyError`` ->
NOT_FOUND), whose text is the same ``{"code", "message"}`` JSON, and whose
traceback Arrow's formatter is told to leave out (see :func:`_quiet_tracebacks`).

==================  ===============================  =====================
error               Flight class                     code
==================  ===============================  =====================
InvalidArgument     FlightServerError                invalid_argument
NotFound            FlightServerError                not_found
AlreadyExists       FlightServerError                already_exists
Unauthenticated     FlightUnauthenticatedError       unauthenticated
PermissionDenied    FlightUnauthorizedError          permission_denied
Unavailable         FlightUnavailableError           unavailable
(anything else)     FlightInternalError              internal
==================  ===============================  =====================
"""

from __future__ import annotations

import contextlib
import json
import logging
import traceback
from collections.abc import Iterator

import pyarrow.flight as flight

from flight_protocol.columns import UnsupportedColumn
from flight_protocol.messages import ProtocolError
from flight_protocol.tiledb import TileDBUnavailable
from flight_server.query import UnsafeQuery

log = logging.getLogger(__name__)


class BridgeError(Exception):
    """Base of the errors a backend or the service raises on purpose."""

    code = "internal"


class InvalidArgument(BridgeError):
    code = "invalid_argument"


class NotFound(BridgeError):
    code = "not_found"


class AlreadyExists(BridgeError):
    code = "already_exists"


class Unauthenticated(BridgeError):
    code = "unauthenticated"


class PermissionDenied(BridgeError):
    code = "permission_denied"


class Unavailable(BridgeError):
    code = "unavailable"


_FLIGHT_CLASS: dict[str, type[flight.FlightError]] = {
    "invalid_argument": flight.FlightServerError,
    "not_found": flight.FlightServerError,
    "already_exists": flight.FlightServerError,
    "unauthenticated": flight.FlightUnauthenticatedError,
    "permission_denied": flight.FlightUnauthorizedError,
    "unavailable": flight.FlightUnavailableError,
    "internal": flight.FlightInternalError,
}


#: Longest message a client is sent (messages echo user input; gRPC headers are bounded).
MAX_MESSAGE_CHARS = 1000

INTERNAL_MESSAGE = "internal server error; see the server log"


def bounded(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """A message cut to ``limit`` characters and made safe to encode (the one place)."""
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return message if len(message) <= limit else message[: limit - 3] + "..."


def error_json(code: str, message: str) -> bytes:
    return json.dumps({"code": code, "message": message}).encode()


def flight_error(code: str, message: str) -> flight.FlightError:
    """A Flight error of the class matching ``code``, carrying code and message as JSON."""
    message = bounded(message)
    return _FLIGHT_CLASS[code](message, extra_info=error_json(code, message))


def code_and_message(exc: BaseException) -> tuple[str, str]:
    """The code and (unbounded) message the client should see for ``exc``."""
    if isinstance(exc, BridgeError):
        return exc.code, str(exc)
    if isinstance(exc, ProtocolError):
        return "invalid_argument", f"malformed request: {exc}"
    if isinstance(exc, UnsafeQuery):
        return "invalid_argument", f"query refused: {exc}"
    if isinstance(exc, UnsupportedColumn):
        return "invalid_argument", f"cannot store this table: {exc}"
    if isinstance(exc, TileDBUnavailable):
        return "invalid_argument", str(exc)
    if isinstance(exc, UnicodeDecodeError):  # names and metadata arrive as bytes
        log.info("refused text that is not UTF-8", exc_info=exc)
        return "invalid_argument", "the request holds text that is not valid UTF-8"
    log.error("unexpected error", exc_info=exc)
    return "internal", INTERNAL_MESSAGE


def to_flight(exc: BaseException) -> flight.FlightError:
    """Translate any exception into the Flight error the client should see."""
    if isinstance(exc, flight.FlightError):
        return exc
    return flight_error(*code_and_message(exc))


@contextlib.contextmanager
def flight_errors() -> Iterator[None]:
    """Run a block, re-raising whatever escapes it as a Flight error."""
    try:
        yield
    except flight.FlightError:
        raise
    except Exception as exc:
        raise to_flight(exc) from None


# -- get_schema ------------------------------------------------------------------------

class SchemaRefusal(Exception):
    """A refusal raised out of ``get_schema``; its text is the ``{"code", "message"}`` JSON."""

    code = "internal"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(error_json(code, message).decode())
        self.code = code

    def __str__(self) -> str:  # KeyError would quote it
        return str(self.args[0])


class _InvalidSchemaRefusal(SchemaRefusal, ValueError):
    """Arrow maps a ValueError to Invalid, which gRPC carries as INVALID_ARGUMENT."""


class _NotFoundSchemaRefusal(SchemaRefusal, KeyError):
    """Arrow maps a KeyError to KeyError, which gRPC carries as NOT_FOUND."""


_SCHEMA_CLASS = {"invalid_argument": _InvalidSchemaRefusal, "already_exists": _InvalidSchemaRefusal,
                 "not_found": _NotFoundSchemaRefusal}


def schema_refusal(exc: BaseException) -> SchemaRefusal:
    """What ``get_schema`` raises for ``exc`` (see the module docstring)."""
    if isinstance(exc, flight.FlightError) and exc.extra_info:
        try:
            info = json.loads(exc.extra_info)
            code, message = str(info["code"]), str(info["message"])
        except (ValueError, KeyError, TypeError):
            code, message = "internal", INTERNAL_MESSAGE
    elif isinstance(exc, flight.FlightError):
        code, message = "internal", INTERNAL_MESSAGE
        log.error("unexpected error", exc_info=exc)
    else:
        code, message = code_and_message(exc)
    return _SCHEMA_CLASS.get(code, SchemaRefusal)(code, bounded(message))


@contextlib.contextmanager
def schema_errors() -> Iterator[None]:
    """:func:`flight_errors` for ``get_schema``: re-raise as a :class:`SchemaRefusal`."""
    try:
        yield
    except Exception as exc:
        raise schema_refusal(exc) from None


def _quiet_tracebacks() -> None:
    """Make Arrow's formatting of an escaped Python error omit the traceback of a refusal.

    Arrow (``PythonErrorDetail::ToString``) sends ``traceback.format_exception`` of
    the error to the client. For a :class:`SchemaRefusal` that is only its one line;
    every other exception is formatted as before.
    """
    original = traceback.format_exception
    if getattr(original, "_omero_flight", False):
        return

    def format_exception(*args, **kwargs):
        target = args[1] if len(args) > 1 else (args[0] if args else None)
        if isinstance(target, SchemaRefusal):
            return [f"{type(target).__name__}\n"]
        return original(*args, **kwargs)

    format_exception._omero_flight = True  # type: ignore[attr-defined]
    traceback.format_exception = format_exception


_quiet_tracebacks()
