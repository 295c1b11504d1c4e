"""The client's exceptions: one tree, so callers can catch as broadly as they like.

::

    OmeroFlightError
    ├── ConnectionFailed             the bridge cannot be reached or the details are incomplete
    │   ├── MissingConnectionDetails no address/user/password and prompting is off
    │   └── ConnectionClosed         a connection is used after shutdown() (also RuntimeError)
    ├── AuthenticationFailed         wrong credentials, expired session or token
    ├── PermissionDenied             authenticated, but not allowed to change that object
    ├── NotFound                     no such table, file, annotation or column, or one the user
    │                                may not see (as OMERO answers) (also LookupError)
    ├── InvalidRequest               a bad argument, refused by client or server (also ValueError)
    │   └── AlreadyExists            the server refuses to create something that exists
    ├── ServerBusy                   the bridge or OMERO is temporarily unavailable (retried first)
    ├── ServerError                  the bridge failed; the message says why
    ├── MissingDependency            an optional library is not installed (also ImportError)
    └── NotSupported                 a feature this client does not offer yet (also
                                     NotImplementedError)

``InvalidRequest`` is a ``ValueError`` so ``except ValueError`` in scripts written
for omero2pandas keeps working. Errors raised by the server carry its ``code``
(one of :data:`flight_protocol.messages.ERROR_CODES`) and message. Writing to a
local file that already exists raises the built-in :class:`FileExistsError`.
"""

from __future__ import annotations


class OmeroFlightError(Exception):
    """Base class of every error this client raises on purpose."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: The server's error code, when the error came from the server.
        self.code = code


class ConnectionFailed(OmeroFlightError):
    """The bridge could not be reached, or the connection could not be set up."""


class MissingConnectionDetails(ConnectionFailed):
    """Connection details are missing and prompting for them is switched off."""


class ConnectionClosed(ConnectionFailed, RuntimeError):
    """A connection was used after it was shut down."""


class AuthenticationFailed(OmeroFlightError):
    """The bridge refused the credentials, session key or token."""


class PermissionDenied(OmeroFlightError):
    """The user may not change the object (what a user may not read is :class:`NotFound`)."""


class NotFound(OmeroFlightError, LookupError):
    """The table, file, annotation or column does not exist (or is invisible to the user)."""


class InvalidRequest(OmeroFlightError, ValueError):
    """An argument is wrong: refused by the client before sending, or by the server."""


class AlreadyExists(InvalidRequest):
    """The server refused to create an object that already exists."""


class ServerBusy(OmeroFlightError):
    """The bridge or OMERO is temporarily unavailable; retrying later may succeed."""


class ServerError(OmeroFlightError):
    """The bridge failed while handling the request."""


class MissingDependency(OmeroFlightError, ImportError):
    """An optional library is needed for this call; the message names the extra to install."""


class NotSupported(OmeroFlightError, NotImplementedError):
    """A feature of omero2pandas that this client does not provide (yet)."""


#: Server error code -> exception class.
BY_CODE: dict[str, type[OmeroFlightError]] = {
    "invalid_argument": InvalidRequest,
    "not_found": NotFound,
    "already_exists": AlreadyExists,
    "unauthenticated": AuthenticationFailed,
    "permission_denied": PermissionDenied,
    "unavailable": ServerBusy,
    "internal": ServerError,
}
