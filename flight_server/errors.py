"""The one place where backend and protocol errors become Flight errors.

Backends raise the small :class:`BridgeError` tree below; the protocol,
query and column modules raise ``ValueError`` subclasses of their own. The
service wraps every RPC in :func:`flight_errors`, which turns each into the
matching ``pyarrow.flight`` error with ``extra_info`` set to
``{"code": <protocol.ERROR_CODES entry>, "message": ...}`` as JSON. Anything
else is a bug: it is logged here with its traceback and the client gets a short
internal error, never the traceback.

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
from collections.abc import Iterator

import pyarrow.flight as flight

from flight_client.protocol import ProtocolError
from flight_server.columns import UnsupportedColumn
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


def flight_error(code: str, message: str) -> flight.FlightError:
    """A Flight error of the class matching ``code``, carrying code and message as JSON."""
    extra = json.dumps({"code": code, "message": message}).encode()
    return _FLIGHT_CLASS[code](message, extra_info=extra)


def to_flight(exc: BaseException) -> flight.FlightError:
    """Translate any exception into the Flight error the client should see."""
    if isinstance(exc, flight.FlightError):
        return exc
    if isinstance(exc, BridgeError):
        return flight_error(exc.code, str(exc))
    if isinstance(exc, ProtocolError):
        return flight_error("invalid_argument", f"malformed request: {exc}")
    if isinstance(exc, UnsafeQuery):
        return flight_error("invalid_argument", f"query refused: {exc}")
    if isinstance(exc, UnsupportedColumn):
        return flight_error("invalid_argument", f"cannot store this table: {exc}")
    log.error("unexpected error", exc_info=exc)
    return flight_error("internal", f"internal server error ({type(exc).__name__}); see server log")


@contextlib.contextmanager
def flight_errors() -> Iterator[None]:
    """Run a block, re-raising whatever escapes it as a Flight error."""
    try:
        yield
    except flight.FlightError:
        raise
    except Exception as exc:
        raise to_flight(exc) from None
