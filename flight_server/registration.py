"""The ``register_table`` action: the bridge registers a TileDB array with OMERO Plus.

A client that logged in to an OMERO-backed bridge with a user name and
password does not know its OMERO session key; the bridge does. This action
sends OMERO Plus the same HTTPS registration the client would
(:func:`flight_client.remote.register_table`), authenticated by the caller's
own OMERO session. The OMERO.web address is the bridge's ``omero_web_url``
setting (``--omero-web-url``; without it, the bridge's ``OMERO_FLIGHT_WEB_URL``);
a private CA through ``SSL_CERT_FILE``. The
embedded store has no OMERO sessions, so it refuses the action.

Body: ``{"uri", "table_name", "links": [[type, id], ...], "token", "prefix"?}``;
result: ``{"annotation_id"}``.
"""

from __future__ import annotations

from typing import Any

from flight_client import errors as client_errors
from flight_client.protocol import ACTION_REGISTER_TABLE, decode_body, encode_body
from flight_server.backends.base import Caller
from flight_server.errors import (
    AlreadyExists,
    BridgeError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)

__all__ = ["ACTION_REGISTER_TABLE", "DESCRIPTION", "register", "session_key"]

DESCRIPTION = ("Body: {uri, table_name, links, token, prefix?} -> {annotation_id}: register "
               "a TileDB array with OMERO Plus in place, with the caller's OMERO session")

_ERRORS: list[tuple[type[client_errors.OmeroFlightError], type[BridgeError]]] = [
    (client_errors.AlreadyExists, AlreadyExists),
    (client_errors.MissingConnectionDetails, InvalidArgument),
    (client_errors.ConnectionFailed, Unavailable),
    (client_errors.AuthenticationFailed, Unauthenticated),
    (client_errors.PermissionDenied, PermissionDenied),
    (client_errors.NotFound, NotFound),
    (client_errors.InvalidRequest, InvalidArgument),
]


def session_key(caller: Caller) -> str:
    """The caller's OMERO session key (the OMERO backend's session holds an omero-py client)."""
    client: Any = getattr(caller.session, "client", None)
    get_session_id = getattr(client, "getSessionId", None)
    if get_session_id is None:
        raise InvalidArgument(
            "this bridge holds no OMERO session for you (it serves the embedded store), so it "
            "cannot register tables with OMERO Plus: register from the client with session_key=")
    return str(get_session_id())


def register(caller: Caller, raw: bytes, web_url: str | None = None) -> bytes:
    """Run the action for ``caller``; see the module docstring."""
    from flight_client.remote import register_table

    body = decode_body(raw)
    missing = [k for k in ("uri", "table_name", "links", "token") if k not in body]
    if missing:
        raise InvalidArgument(f"register_table needs {', '.join(missing)} in its body")
    key = session_key(caller)
    try:
        annotation_id = register_table(
            None, body["uri"], body["table_name"], [tuple(link) for link in body["links"]],
            body["token"], str(body.get("prefix") or ""), session_key=key, web_url=web_url)
    except client_errors.OmeroFlightError as exc:
        kind = next((server for client, server in _ERRORS if isinstance(exc, client)), None)
        if kind is None:
            raise
        raise kind(exc.message) from None
    except TypeError as exc:
        raise InvalidArgument(f"malformed register_table body: {exc}") from None
    return encode_body(annotation_id=annotation_id)
