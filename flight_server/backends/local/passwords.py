"""Password hashing for the embedded store: scrypt with a random salt per user.

Every check costs one scrypt, whether the user exists or not (:func:`verify_unknown`
checks against a fixed dummy hash), so the time of a refusal tells nothing about
which user names exist. A password containing a NUL character is never accepted
(nor stored): scrypt would treat ``"pw\\0"`` like ``"pw"``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

_N, _R, _P, _LEN = 2**14, 8, 1, 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def derive(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    """The one place scrypt runs (tests count its calls)."""
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen,
                          maxmem=256 * n * r + (1 << 20))


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash``, safe to store."""
    if not isinstance(password, str) or not password:
        raise ValueError("a password must be a non-empty string")
    if "\0" in password:
        raise ValueError("a password must not contain a NUL character")
    salt = secrets.token_bytes(16)
    digest = derive(password.encode("utf-8", "surrogatepass"), salt, _N, _R, _P, _LEN)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a :func:`hash_password` result (constant-time compare)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        if int(n) > 2**20 or int(r) > 64 or int(p) > 16:
            return False
        got = derive(str(password).encode("utf-8", "surrogatepass"), base64.b64decode(salt),
                     int(n), int(r), int(p), len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected) and "\0" not in password


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def verify_unknown(password: str) -> bool:
    """The same work as :func:`verify_password` for a user that does not exist: always False."""
    verify_password(password, _dummy_hash())
    return False
