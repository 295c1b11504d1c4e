"""Authentication: the basic-auth handshake, signed expiring bearer tokens, the middleware.

A client calls ``FlightClient.authenticate_basic_token(user, password)``; the
middleware checks the password with the backend and answers with an
``authorization: Bearer <token>`` header. Every later call (``list_flights``
and ``do_action`` included) must carry that header. A token is
``base64url(json{"u": subject, "exp": unix time}) "." base64url(HMAC-SHA256)``,
signed with a secret the server keeps to itself and compared in constant time.
The subject is the user name for the embedded store, and the handle of the
caller's own OMERO session for the OMERO backend (see :func:`token_subject`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time

import pyarrow.flight as flight

from flight_server.backends.base import Backend, Caller
from flight_server.errors import BridgeError, Unauthenticated, flight_error, to_flight

log = logging.getLogger(__name__)

DEFAULT_TOKEN_LIFETIME = 12 * 3600.0
MIDDLEWARE_KEY = "auth"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issues and checks bearer tokens naming a user, valid for ``lifetime`` seconds."""

    def __init__(self, secret: bytes, lifetime: float = DEFAULT_TOKEN_LIFETIME) -> None:
        if len(secret) < 16:
            raise ValueError("the token secret must be at least 16 bytes")
        self._secret = secret
        self.lifetime = lifetime

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())

    def issue(self, username: str, now: float | None = None) -> str:
        expiry = int((time.time() if now is None else now) + self.lifetime)
        payload = _b64(json.dumps({"u": username, "exp": expiry}).encode())
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str, now: float | None = None) -> str:
        """The user a valid token names; raises :class:`Unauthenticated` otherwise."""
        payload, _, signature = token.partition(".")
        if not hmac.compare_digest(self._sign(payload).encode(), signature.encode()):
            raise Unauthenticated("invalid token: sign in again")
        try:
            claims = json.loads(_unb64(payload))
            username, expiry = claims["u"], float(claims["exp"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise Unauthenticated("invalid token: sign in again") from None
        if (time.time() if now is None else now) >= expiry:
            raise Unauthenticated("token expired: sign in again")
        return str(username)


class AuthMiddleware(flight.ServerMiddleware):
    """Carries the caller of one call, and the new token after a basic-auth handshake."""

    def __init__(self, caller: Caller, token: str | None = None) -> None:
        self.caller = caller
        self.token = token

    def sending_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}


def _header(headers: dict[str, list[str]], name: str) -> str | None:
    for key, values in headers.items():
        if key.lower() == name and values:
            value = values[0]
            return value.decode() if isinstance(value, bytes) else value
    return None


class AuthMiddlewareFactory(flight.ServerMiddlewareFactory):
    """Basic header -> check password, issue a token; Bearer -> check token; else refuse.

    With ``require_auth=False`` (loopback only, see the CLI) a call without an
    ``authorization`` header runs as ``anonymous_user``.
    """

    def __init__(self, backend: Backend, signer: TokenSigner, require_auth: bool = True,
                 anonymous_user: str = "root") -> None:
        self.backend = backend
        self.signer = signer
        self.require_auth = require_auth
        self.anonymous_user = anonymous_user

    def start_call(self, info: flight.CallInfo, headers: dict[str, list[str]]) -> AuthMiddleware:
        try:
            return self._authenticate(_header(headers, "authorization"))
        except BridgeError as exc:
            raise to_flight(exc) from None
        except Exception as exc:  # never let a traceback reach the client
            raise to_flight(exc) from None

    def _authenticate(self, value: str | None) -> AuthMiddleware:
        if value is None:
            if not self.require_auth:
                return AuthMiddleware(self.backend.lookup_caller(self.anonymous_user))
            raise flight_error("unauthenticated",
                               "no credentials: sign in with basic auth to get a bearer token")
        scheme, _, credentials = value.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            try:
                # unpadded too: the Go Flight client (ADBC's Flight SQL driver) sends it so
                padded = credentials + "=" * (-len(credentials) % 4)
                username, sep, password = base64.b64decode(padded).decode().partition(":")
            except (ValueError, binascii.Error):
                raise Unauthenticated("malformed basic credentials") from None
            if not sep:
                raise Unauthenticated("malformed basic credentials")
            caller = self.backend.authenticate(username, password)
            log.info("user %s signed in", caller.username)
            return AuthMiddleware(caller, self.signer.issue(token_subject(self.backend, caller)))
        if scheme == "bearer":
            username = self.signer.verify(credentials.strip())
            return AuthMiddleware(self.backend.lookup_caller(username))
        raise Unauthenticated(f"unsupported authorization scheme {scheme!r}: use Basic or Bearer")


def token_subject(backend: Backend, caller: Caller) -> str:
    """What a token names: the user, or for a backend with per-sign-in sessions (OMERO) that
    session, so a token reaches exactly the session it was issued for."""
    return backend.token_subject(caller)


class NoOpAuthHandler(flight.ServerAuthHandler):
    """Lets the Handshake RPC succeed; the middleware does the real work."""

    def authenticate(self, outgoing: object, incoming: object) -> None:
        pass

    def is_valid(self, token: bytes) -> str:
        return ""


def caller_of(context: flight.ServerCallContext) -> Caller:
    """The caller the middleware established for this call."""
    middleware = context.get_middleware(MIDDLEWARE_KEY)
    if middleware is None:
        raise flight_error("unauthenticated", "no authentication middleware on this server")
    return middleware.caller
