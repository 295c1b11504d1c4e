"""OMERO's exceptions as the bridge's: the one place they are translated.

==========================================  ===================
OMERO / Ice                                 bridge error
==========================================  ===================
SecurityViolation (and subclasses)          PermissionDenied
LockTimeout, OptimisticLockException,       Unavailable (with a retry hint)
TryAgain (any ConcurrencyException)
SessionException, Glacier2 refusals,        Unauthenticated
Ice.ObjectNotExistException (session gone)
ValidationException "No row with ..."       NotFound
ApiUsageException, ValidationException      InvalidArgument
Ice connection failures and timeouts        Unavailable
==========================================  ===================

Every message carries OMERO's own message and says what the bridge was doing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import Glacier2
import Ice
import omero

from flight_server.errors import (
    BridgeError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger(__name__)

DEFAULT_RETRY_SECONDS = 5


class SessionGone(Unauthenticated):
    """The user's OMERO session expired or was closed; the bridge forgets it."""


def omero_message(exc: BaseException) -> str:
    """OMERO's message for an exception (its ``message`` field, else the reason or the name)."""
    for attr in ("message", "reason"):
        text = getattr(exc, attr, None)
        if isinstance(text, str) and text.strip():
            return text.strip()
    return type(exc).__name__


def translate(exc: BaseException, doing: str) -> BridgeError:
    """The bridge error for an OMERO or Ice exception raised while ``doing`` something."""
    message = f"{doing}: {omero_message(exc)}"
    if isinstance(exc, omero.SecurityViolation):
        return PermissionDenied(f"{doing}: OMERO refused: {omero_message(exc)}")
    if isinstance(exc, omero.ConcurrencyException):
        seconds = max(1, int(getattr(exc, "backOff", 0) or 0) // 1000) or DEFAULT_RETRY_SECONDS
        return Unavailable(f"{message} (OMERO is busy: retry in {seconds} s)")
    if isinstance(exc, omero.SessionException | Ice.ObjectNotExistException):
        return SessionGone(f"{doing}: the OMERO session has expired or been closed "
                           f"({omero_message(exc)}): sign in again")
    if isinstance(exc, Glacier2.PermissionDeniedException | Glacier2.CannotCreateSessionException):
        return Unauthenticated(f"OMERO refused the sign-in: {omero_message(exc)}")
    if isinstance(exc, omero.ValidationException) and "no row with" in message.lower():
        return NotFound(message)
    if isinstance(exc, omero.ApiUsageException):
        return InvalidArgument(message)
    if isinstance(exc, Ice.ConnectFailedException | Ice.ConnectionLostException
                  | Ice.TimeoutException | Ice.DNSException | Ice.SocketException):
        return Unavailable(f"{doing}: cannot reach the OMERO server ({type(exc).__name__}); "
                           f"retry in {DEFAULT_RETRY_SECONDS} s")
    if isinstance(exc, Ice.CommunicatorDestroyedException):
        return SessionGone(f"{doing}: the OMERO session was closed: sign in again")
    log.error("unexpected OMERO error while %s", doing, exc_info=exc)
    return BridgeError(f"{doing}: OMERO error {type(exc).__name__}: {omero_message(exc)}")


@contextlib.contextmanager
def omero_errors(doing: str) -> Iterator[None]:
    """Run a block of OMERO calls, re-raising OMERO and Ice errors as bridge errors."""
    try:
        yield
    except BridgeError:
        raise
    except (omero.ServerError, Ice.Exception) as exc:
        raise translate(exc, doing) from exc
