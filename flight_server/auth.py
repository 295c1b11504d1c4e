"""Authentication: the basic-auth handshake, signed expiring bearer tokens, the middleware.

A client calls ``FlightClient.authenticate_basic_token(user, password)``; the
middleware checks the password with the backend and answers with an
``authorization: Bearer <token>`` header. Every later call (``list_flights``
and ``do_action`` included) must carry that header. A token is
``base64url(json{"u": subject, "exp": unix time}) "." base64url(HMAC-SHA256)``,
signed with a secret the server keeps to itself and compared in constant time.
The subject is, for the embedded store, the user id, a per-user generation (a
password change advances it, ending every token of that user; removal ends them
too) and the sign-in, which logout ends; and the
handle of the caller's own OMERO session for the OMERO backend (see
:func:`token_subject`).

Failed sign-ins are throttled per user name (known or not) by
:class:`SignInThrottle`: after a few failures each further attempt is refused
without checking the password until a delay that doubles with every failure
has passed; the refusal says when to retry, and every failure is logged.
Password checks also run at most :data:`MAX_CONCURRENT_CHECKS` at a time, so
guessing cannot take every core. pyarrow gives the sign-in middleware no peer
address, so there is no per-address throttle (see docs/limits.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

import pyarrow.flight as flight

from flight_protocol.messages import echo
from flight_server.backends.base import Backend, Caller
from flight_server.errors import BridgeError, Unauthenticated, flight_error, to_flight

log = logging.getLogger(__name__)

DEFAULT_TOKEN_LIFETIME = 12 * 3600.0
MIDDLEWARE_KEY = "auth"
#: Password checks (one scrypt, or one OMERO login, each) running at the same time.
MAX_CONCURRENT_CHECKS = 4
#: Longest user name or password accepted in a basic header.
MAX_CREDENTIAL_CHARS = 1024


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token says: its subject and, when issued at a sign-in, the user."""

    subject: str
    user_id: int | None = None
    username: str | None = None


class TokenSigner:
    """Issues and checks bearer tokens naming a user, valid for ``lifetime`` seconds.

    A token also carries its signing key's id (``k``, a hash: replicas sharing a key
    share it), so a token from a bridge with another key is refused as such, and the
    user it was issued to (``id``, ``n``), which a replica that does not hold the
    sign-in uses to serve signed range tickets (:meth:`Backend.grant_caller`).
    """

    def __init__(self, secret: bytes, lifetime: float = DEFAULT_TOKEN_LIFETIME) -> None:
        if len(secret) < 16:
            raise ValueError("the token secret must be at least 16 bytes")
        self._secret = secret
        self.lifetime = lifetime
        self.key_id = hashlib.sha256(b"token key id\0" + secret).hexdigest()[:16]

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())

    def issue(self, username: str, now: float | None = None, *, user_id: int | None = None,
              name: str | None = None) -> str:
        expiry = int((time.time() if now is None else now) + self.lifetime)
        claims: dict[str, object] = {"u": username, "exp": expiry, "k": self.key_id}
        if user_id is not None:
            claims.update(id=user_id, n=name)
        payload = _b64(json.dumps(claims).encode())
        return f"{payload}.{self._sign(payload)}"

    def claims(self, token: str, now: float | None = None) -> TokenClaims:
        """What a valid token says; raises :class:`Unauthenticated` naming what is wrong."""
        payload, _, signature = token.partition(".")
        try:
            claims = json.loads(_unb64(payload))
            username, expiry = claims["u"], float(claims["exp"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            claims = None
        if not hmac.compare_digest(self._sign(payload).encode(), signature.encode()):
            if isinstance(claims, dict) and isinstance(claims.get("k"), str) \
                    and claims["k"] != self.key_id:
                raise Unauthenticated("invalid token: it was signed with another key (by a "
                                      "bridge that is not a replica of this one; replicas "
                                      "share token_secret_file): sign in again")
            raise Unauthenticated("invalid token: sign in again")
        if claims is None:
            raise Unauthenticated("invalid token: sign in again")
        if (time.time() if now is None else now) >= expiry:
            raise Unauthenticated("token expired: sign in again")
        user_id = claims.get("id")
        return TokenClaims(str(username), user_id if type(user_id) is int else None,
                           str(claims.get("n") or ""))

    def verify(self, token: str, now: float | None = None) -> str:
        """The subject a valid token names; raises :class:`Unauthenticated` otherwise."""
        return self.claims(token, now).subject


class SignInThrottle:
    """Per-key backoff after failed sign-ins, in memory.

    The first ``free`` failures cost nothing more; after that each failure locks
    the key for ``base * 2**(failures - free)`` seconds (at most ``cap``). A
    success clears the key. At most ``max_keys`` keys are kept (oldest dropped).
    """

    def __init__(self, free: int = 5, base: float = 1.0, cap: float = 300.0,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self.free, self.base, self.cap = free, base, cap
        self.clock = clock
        self.max_keys = max_keys
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def wait_left(self, key: str) -> float:
        """Seconds until ``key`` may try again (0 when it may now)."""
        with self._lock:
            entry = self._failures.get(key)
        return 0.0 if entry is None else max(0.0, entry[1] - self.clock())

    def check(self, key: str) -> None:
        left = self.wait_left(key)
        if left > 0:
            log.warning("sign-in for %s refused: locked for %.0f s more", key, left)
            raise Unauthenticated(f"too many failed sign-ins for this user: try again in "
                                  f"{math.ceil(left)} s")

    def failed(self, key: str) -> float:
        """Record a failure; returns the lock it starts, in seconds."""
        with self._lock:
            count = self._failures.pop(key, (0, 0.0))[0] + 1
            over = count - self.free
            delay = 0.0 if over <= 0 else min(self.cap, self.base * 2 ** min(over - 1, 32))
            self._failures[key] = (count, self.clock() + delay)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)
        log.warning("failed sign-in for %s (%d in a row%s)", key, count,
                    f"; locked for {delay:.0f} s" if delay else "")
        return delay

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


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
                 anonymous_user: str = "root", throttle: SignInThrottle | None = None) -> None:
        self.backend = backend
        self.signer = signer
        self.require_auth = require_auth
        self.anonymous_user = anonymous_user
        self.throttle = throttle or SignInThrottle()
        self._checks = threading.BoundedSemaphore(MAX_CONCURRENT_CHECKS)

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
                if len(credentials) > 4 * MAX_CREDENTIAL_CHARS:
                    raise ValueError("too long")
                # unpadded too: the Go Flight client (ADBC's Flight SQL driver) sends it so
                padded = credentials + "=" * (-len(credentials) % 4)
                username, sep, password = base64.b64decode(padded).decode().partition(":")
            except (ValueError, binascii.Error):
                raise Unauthenticated("malformed basic credentials") from None
            if not sep or not username or len(username) > MAX_CREDENTIAL_CHARS \
                    or len(password) > MAX_CREDENTIAL_CHARS:
                raise Unauthenticated("malformed basic credentials")
            return self._sign_in(username, password)
        if scheme == "bearer":
            claims = self.signer.claims(credentials.strip())
            try:
                return AuthMiddleware(self.backend.caller_for_token(claims.subject))
            except Unauthenticated:
                # Another replica's sign-in (same key): only signed tickets, if the backend
                # serves them without the sign-in (OMERO with its data directory).
                caller = None if claims.user_id is None else self.backend.grant_caller(
                    claims.user_id, claims.username or "")
                if caller is None:
                    raise
                return AuthMiddleware(replace(caller, session=GRANT_ONLY))
        raise Unauthenticated(f"unsupported authorization scheme {echo(scheme, 40)}: "
                              "use Basic or Bearer")

    def _sign_in(self, username: str, password: str) -> AuthMiddleware:
        key = "user " + echo(username.casefold(), 100)
        self.throttle.check(key)
        with self._checks:
            try:
                if "\0" in username or "\0" in password:  # for every backend, OMERO's too
                    raise Unauthenticated("wrong user name or password")
                caller = self.backend.authenticate(username, password)
            except Unauthenticated:
                self.throttle.failed(key)
                raise
        self.throttle.succeeded(key)
        log.info("user %s signed in", caller.username)
        return AuthMiddleware(caller, self.signer.issue(token_subject(self.backend, caller),
                                                        user_id=caller.user_id,
                                                        name=caller.username))


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


class _GrantOnly:
    """The session of a caller whose sign-in another replica holds (see the middleware)."""

    def __repr__(self) -> str:
        return "GRANT_ONLY"


#: ``Caller.session`` of a token whose sign-in this replica does not hold: it may only
#: redeem signed tickets (``caller_of(context, signed_ticket=True)``).
GRANT_ONLY = _GrantOnly()


def caller_of(context: flight.ServerCallContext, *, signed_ticket: bool = False) -> Caller:
    """The caller the middleware established for this call.

    A caller whose sign-in another replica holds is refused unless the call redeems a
    signed ticket (``signed_ticket``).
    """
    middleware = context.get_middleware(MIDDLEWARE_KEY)
    if middleware is None:
        raise flight_error("unauthenticated", "no authentication middleware on this server")
    caller = middleware.caller
    if caller.session is GRANT_ONLY and not signed_ticket:
        raise Unauthenticated("this token's sign-in is not held by this replica (another "
                              "replica holds it, or it ended): this one serves only the signed "
                              "tickets of reads planned there; sign in again here for anything "
                              "else")
    return caller
