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
Ice.MemoryLimitException (a message over    InvalidArgument (retrying cannot help)
Ice.MessageSizeMax)
Ice.InvocationTimeoutException (no answer   Unavailable (no retry hint: the same
within the call timeout)                    call may well freeze again)
Ice connection failures and timeouts        Unavailable
Ice.UnknownLocalException (what Glacier2    Unavailable (an OMERO service such as
sends when a service behind it died)        OMERO.tables failed or is restarting)
==========================================  ===================

Every message says what the bridge was doing and carries OMERO's own message,
cut to ``MAX_OMERO_TEXT`` characters and with anything shaped like a session
key (OMERO's are UUIDs; a joined session's key is passed in ``secrets``)
replaced by ``<session key>``: OMERO's text can be long (tracebacks) and
can quote what it was given.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator

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
#: At most this many characters of OMERO's own text in any message.
MAX_OMERO_TEXT = 200
#: At most this many characters of what the bridge was doing (it may quote a name).
MAX_DOING_TEXT = 300

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_REDACTED = "<session key>"


class SessionGone(Unauthenticated):
    """The user's OMERO session expired or was closed; the bridge forgets it."""


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (with an ellipsis and the full length)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with session keys (``secrets`` and anything UUID-shaped) replaced."""
    for secret in secrets:
        if secret and len(secret) >= 8:
            text = text.replace(secret, _REDACTED)
    return _UUID.sub(_REDACTED, text)


def omero_message(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """OMERO's message for an exception (its ``message`` field, else the reason or the name),
    bounded and without session keys."""
    text = type(exc).__name__
    for attr in ("message", "reason", "unknown"):
        value = getattr(exc, attr, None)
        if isinstance(value, str) and value.strip():
            text = value.strip()
            break
    return clip(" ".join(redact(text, secrets).split()), MAX_OMERO_TEXT)


def translate(exc: BaseException, doing: str, secrets: Iterable[str] = ()) -> BridgeError:
    """The bridge error for an OMERO or Ice exception raised while ``doing`` something."""
    doing = clip(redact(doing, secrets), MAX_DOING_TEXT)
    said = omero_message(exc, secrets)
    message = f"{doing}: {said}"
    if isinstance(exc, omero.SecurityViolation):
        return PermissionDenied(f"{doing}: OMERO refused: {said}")
    if isinstance(exc, omero.ConcurrencyException):
        seconds = max(1, int(getattr(exc, "backOff", 0) or 0) // 1000) or DEFAULT_RETRY_SECONDS
        return Unavailable(f"{message} (OMERO is busy: retry in {seconds} s)")
    if isinstance(exc, omero.SessionException | Ice.ObjectNotExistException):
        return SessionGone(f"{doing}: the OMERO session has expired or been closed "
                           f"({said}): sign in again")
    if isinstance(exc, Glacier2.PermissionDeniedException | Glacier2.CannotCreateSessionException):
        return Unauthenticated(f"OMERO refused the sign-in: {said}")
    if isinstance(exc, omero.ValidationException) and "no row with" in said.lower():
        return NotFound(message)
    if isinstance(exc, omero.ApiUsageException):
        return InvalidArgument(message)
    if isinstance(exc, Ice.MemoryLimitException):
        return InvalidArgument(f"{doing}: the call is larger than OMERO's message limit "
                               "(Ice.MessageSizeMax); retrying will not help: ask for or send "
                               "less at once")
    if isinstance(exc, Ice.InvocationTimeoutException):
        return Unavailable(f"{doing}: OMERO did not answer in time; the call was abandoned "
                           "(OMERO may be overloaded; try again later or ask for less)")
    if isinstance(exc, Ice.ConnectFailedException | Ice.ConnectionLostException
                  | Ice.TimeoutException | Ice.DNSException | Ice.SocketException):
        return Unavailable(f"{doing}: cannot reach the OMERO server ({type(exc).__name__}); "
                           f"retry in {DEFAULT_RETRY_SECONDS} s")
    if isinstance(exc, Ice.UnknownLocalException):
        return Unavailable(f"{doing}: an OMERO service (OMERO.tables or another) failed or is "
                           f"restarting ({said}); retry later, and tell the OMERO "
                           "administrator if it persists")
    if isinstance(exc, Ice.CommunicatorDestroyedException):
        return SessionGone(f"{doing}: the OMERO session was closed: sign in again")
    log.error("unexpected OMERO error while %s", doing, exc_info=exc)
    return BridgeError(f"{doing}: OMERO error {type(exc).__name__}: {said}")


@contextlib.contextmanager
def omero_errors(doing: str, secrets: Iterable[str] = ()) -> Iterator[None]:
    """Run a block of OMERO calls, re-raising OMERO and Ice errors as bridge errors."""
    try:
        yield
    except BridgeError:
        raise
    except (omero.ServerError, Ice.Exception) as exc:
        raise translate(exc, doing, tuple(secrets)) from exc
