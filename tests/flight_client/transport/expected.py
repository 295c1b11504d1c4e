"""What the client must make of each Flight error class, written independently of the code."""

from __future__ import annotations

import pyarrow.flight as flight

from flight_client import errors

#: Flight error class (with no bridge code attached) -> the client error it becomes.
TYPED: dict[type[flight.FlightError], type[errors.OmeroFlightError]] = {
    flight.FlightUnavailableError: errors.ConnectionFailed,
    flight.FlightTimedOutError: errors.ServerBusy,
    flight.FlightUnauthenticatedError: errors.AuthenticationFailed,
    flight.FlightUnauthorizedError: errors.PermissionDenied,
    flight.FlightServerError: errors.ServerError,
    flight.FlightInternalError: errors.ServerError,
    flight.FlightCancelledError: errors.ServerBusy,
}

#: The classes after which a read or an idempotent action is tried again: the bridge is
#: unreachable or stopping. A timeout, a refusal or a server fault is not tried again.
RETRIED = (flight.FlightUnavailableError, flight.FlightCancelledError)


def one_line(err: BaseException) -> bool:
    """A message a person can read on one line (no traceback, no gRPC debug context)."""
    text = str(err)
    return bool(text.strip()) and "\n" not in text and "Traceback" not in text \
        and "debug context" not in text
