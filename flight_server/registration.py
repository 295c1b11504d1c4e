"""The ``register_table`` action: the bridge registers a TileDB array with OMERO Plus.

A client that logged in to an OMERO-backed bridge with a user name and
password does not know its OMERO session key; the bridge does. This action
sends OMERO Plus the same HTTPS registration the client would
(:mod:`flight_protocol.omero_plus`), authenticated by the caller's own OMERO
session, whose key the backend gives (``Backend.omero_session_key``). The
OMERO.web address is the bridge's ``omero_web_url`` setting
(``--omero-web-url``; without it, the bridge's ``OMERO_FLIGHT_WEB_URL``); a
private CA through ``SSL_CERT_FILE``. The embedded store has no OMERO sessions,
so it refuses the action.

Body: ``{"uri", "table_name", "links": [[type, id], ...], "token", "prefix"?}``;
result: ``{"annotation_id"}``.
"""

from __future__ import annotations

from flight_protocol import omero_plus
from flight_protocol.messages import (
    ACTION_REGISTER_TABLE,
    ProtocolError,
    check_name,
    decode_body,
    encode_body,
    normalize_links,
)
from flight_server.backends.base import Backend, Caller
from flight_server.errors import (
    AlreadyExists,
    BridgeError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)

__all__ = ["ACTION_REGISTER_TABLE", "DESCRIPTION", "register"]

DESCRIPTION = ("Body: {uri, table_name, links, token, prefix?} -> {annotation_id}: register "
               "a TileDB array with OMERO Plus in place, with the caller's OMERO session")

#: Protocol error code -> the bridge's error (``internal`` stays internal).
_ERRORS: dict[str, type[BridgeError]] = {
    "invalid_argument": InvalidArgument,
    "not_found": NotFound,
    "already_exists": AlreadyExists,
    "unauthenticated": Unauthenticated,
    "permission_denied": PermissionDenied,
    "unavailable": Unavailable,
}


def register(backend: Backend, caller: Caller, raw: bytes, web_url: str | None = None) -> bytes:
    """Run the action for ``caller`` of ``backend``; see the module docstring."""
    body = decode_body(raw)
    missing = [k for k in ("uri", "table_name", "links", "token") if k not in body]
    if missing:
        raise InvalidArgument(f"register_table needs {', '.join(missing)} in its body")
    uri, token, prefix = body["uri"], body["token"], body.get("prefix") or ""
    if not isinstance(uri, str) or not uri.startswith("/"):
        raise InvalidArgument("uri must be the array's absolute POSIX path on the OMERO Plus "
                              "server")
    if not isinstance(token, str | None) or not isinstance(prefix, str):
        raise InvalidArgument("token and prefix must be strings")
    try:
        name = check_name(body["table_name"], "table_name")
        raw_links = body["links"]
        if not isinstance(raw_links, list):
            raise InvalidArgument("links must be a list of [type, id] pairs")
        links = normalize_links(raw_links)
    except ProtocolError as exc:
        raise InvalidArgument(str(exc)) from None
    if not links:
        raise InvalidArgument("no OMERO objects to link the table to: give links")
    key = backend.omero_session_key(caller)
    try:
        annotation_id = omero_plus.register(uri, name, links, token, key, prefix=prefix,
                                            web_url=web_url)
    except omero_plus.OmeroPlusError as exc:
        kind = _ERRORS.get(exc.code)
        if kind is None:
            raise BridgeError(exc.message) from None
        raise kind(exc.message) from None
    return encode_body(annotation_id=annotation_id)
