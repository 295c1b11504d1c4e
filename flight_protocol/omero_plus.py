"""The OMERO Plus HTTPS registration client: register a TileDB array with OMERO in place.

Used by the client (with the user's OMERO session key) and by the bridge's
``register_table`` action (with the caller's OMERO session). The exchange, as
omero2pandas does it:

1. ``GET <web>/<prefix>/api/v0/token`` gives a CSRF token (``data``) and a cookie;
2. ``POST <web>/<prefix>/omero_plus/api/v0/table?bsession=<session key>`` with
   JSON ``{"uri", "name", "targets": ["Image:1", ...]}`` and the headers
   ``X-CSRFToken``, ``X-SecretToken`` (the array's token) and ``Referer``; the
   answer's ``data.file_annotation`` is the new FileAnnotation id.

Only HTTPS is spoken (the session key and SecretToken travel in the request);
redirects are never followed (OMERO.web redirects to its login page when the
session key is not accepted). Failures raise :class:`OmeroPlusError` carrying
one of the protocol's error codes (:data:`flight_protocol.messages.ERROR_CODES`),
which each end turns into its own exception.
"""

from __future__ import annotations

import http.cookiejar
import json
import logging
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

LOGGER = logging.getLogger(__name__)

ENV_WEB_URL = "OMERO_FLIGHT_WEB_URL"
TOKEN_ENDPOINT = "/api/v0/token"
REGISTER_ENDPOINT = "/omero_plus/api/v0/table"
CSRF_HEADER = "X-CSRFToken"
SECRET_HEADER = "X-SecretToken"


class OmeroPlusError(Exception):
    """OMERO.web refused or failed a registration, or could not be reached.

    ``code`` is a protocol error code: ``invalid_argument``, ``not_found``,
    ``already_exists``, ``unauthenticated``, ``permission_denied``,
    ``unavailable`` (OMERO.web unreachable) or ``internal``; ``status`` the HTTP
    status when OMERO.web answered one.
    """

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class MissingWebAddress(OmeroPlusError):
    """No OMERO.web address was given and ``OMERO_FLIGHT_WEB_URL`` is not set."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid_argument", message)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect means OMERO.web wants a login: report it instead of following it."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def web_base_url(web_url: str | None = None) -> str:
    """The OMERO.web base URL: ``web_url`` or ``OMERO_FLIGHT_WEB_URL``; must be HTTPS."""
    url = web_url or os.environ.get(ENV_WEB_URL)
    if not url:
        raise MissingWebAddress(
            f"registration needs the OMERO Plus web address: give web_url= or set {ENV_WEB_URL} "
            "(e.g. https://omero.example.org)")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.netloc:
        raise OmeroPlusError(
            "invalid_argument",
            f"the OMERO Plus web address must be an https:// URL (the session key and "
            f"SecretToken travel in it), got {url!r}")
    return f"https://{parts.netloc}{parts.path.rstrip('/')}"


def _prefix(prefix: str) -> str:
    prefix = (prefix or "").strip()
    if prefix and not prefix.startswith("/"):
        prefix = "/" + prefix
    return prefix.rstrip("/")


def _server_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read()
    except OSError:
        body = b""
    try:
        content = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:300] or "<no further message>"
    if isinstance(content, dict) and "message" in content:
        return str(content["message"])
    return json.dumps(content)[:300]


_CODE_OF_STATUS = {400: "invalid_argument", 401: "unauthenticated", 403: "permission_denied",
                   404: "not_found", 409: "already_exists"}


def _error(exc: urllib.error.HTTPError, url: str) -> OmeroPlusError:
    status = exc.code
    if 300 <= status < 400:
        return OmeroPlusError(
            "unauthenticated",
            f"OMERO.web redirected {url} to {exc.headers.get('Location')!r}: the OMERO session "
            "key was not accepted (expired or wrong); log in again", status)
    message = f"OMERO Plus answered HTTP {status} for {url}: {_server_message(exc)}"
    if status == 404:
        message += " (is this OMERO Plus with TileDB tables, and is the prefix right?)"
    return OmeroPlusError(_CODE_OF_STATUS.get(status, "internal"), message, status)


def _call(opener: urllib.request.OpenerDirector, request: urllib.request.Request,
          timeout: float) -> dict[str, Any]:
    url = request.full_url.split("?", 1)[0]  # never log the session key
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise _error(exc, url) from None
    except urllib.error.URLError as exc:
        hint = (" (a private CA? pass ca_file=)"
                if isinstance(exc.reason, ssl.SSLCertVerificationError) else "")
        raise OmeroPlusError("unavailable",
                             f"cannot reach OMERO.web at {url}: {exc.reason}{hint}") from None
    except (TimeoutError, OSError) as exc:
        raise OmeroPlusError("unavailable", f"cannot reach OMERO.web at {url}: {exc}") from None
    try:
        content = json.loads(body)
    except ValueError:
        raise OmeroPlusError("internal", f"OMERO.web's answer from {url} is not JSON") from None
    if not isinstance(content, dict):
        raise OmeroPlusError("internal", f"OMERO.web's answer from {url} is not a JSON object")
    return content


def register(
    server_path: str,
    table_name: str,
    links: Sequence[tuple[str, int]],
    token: str | None,
    session_key: str,
    *,
    prefix: str = "",
    web_url: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
) -> int:
    """POST one registration to OMERO Plus; returns the new FileAnnotation id.

    ``server_path`` is the array's absolute POSIX path as the OMERO Plus server
    sees it, ``links`` normalised ``(type, id)`` pairs, ``token`` the array's
    ``SecretToken``, ``session_key`` the OMERO session the request runs as.
    ``timeout`` is in seconds per HTTP request. Raises :class:`OmeroPlusError`.
    """
    base = web_base_url(web_url)
    targets = [f"{kind}:{oid}" for kind, oid in links]
    context = ssl.create_default_context(cafile=None if ca_file is None else os.fspath(ca_file))
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=context),
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
        _NoRedirect())
    root = base + _prefix(prefix)
    csrf = _call(opener, urllib.request.Request(root + TOKEN_ENDPOINT), timeout).get("data")
    if not isinstance(csrf, str) or not csrf:
        raise OmeroPlusError("internal",
                             f"OMERO.web gave no CSRF token at {root + TOKEN_ENDPOINT}")
    body = json.dumps({"uri": str(PurePosixPath(server_path)), "name": table_name,
                       "targets": targets}).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json",
               CSRF_HEADER: csrf, "Referer": base}
    if token:
        headers[SECRET_HEADER] = token
    query = urllib.parse.urlencode({"bsession": session_key})
    request = urllib.request.Request(f"{root}{REGISTER_ENDPOINT}?{query}", data=body,
                                     headers=headers, method="POST")
    LOGGER.info("registering %s as %r with OMERO Plus at %s", server_path, table_name, base)
    content = _call(opener, request, timeout)
    try:
        annotation_id = int(content["data"]["file_annotation"])
    except (KeyError, TypeError, ValueError):
        raise OmeroPlusError(
            "internal",
            f"OMERO Plus's answer has no data.file_annotation: {json.dumps(content)[:300]}"
        ) from None
    LOGGER.info("registered %s as FileAnnotation %d", server_path, annotation_id)
    return annotation_id
