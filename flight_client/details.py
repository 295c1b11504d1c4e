"""Where the bridge is and who logs in: connection details from arguments, environment and token.

Details come from, in order:

1. arguments: ``server`` (a host name, ``host:port`` or a URL such as
   ``grpc://host:8815`` / ``grpc+tls://host:8815``), ``port``, ``username``,
   ``password``, ``session_key``, or an omero-py ``client``/``BlitzGateway``
   whose session is reused;
2. environment variables: ``OMERO_FLIGHT_URL``, ``OMERO_FLIGHT_HOST``,
   ``OMERO_FLIGHT_PORT``, ``OMERO_FLIGHT_USER``, ``OMERO_FLIGHT_PASSWORD``,
   ``OMERO_FLIGHT_TLS_ROOT_CERTS`` (a PEM file or PEM text);
3. an omero-user-token, when that package is installed: its OMERO session key is
   sent to the bridge as user ``__session__``.

What is still missing is asked for by :mod:`flight_client.prompting`, or named
in the error. No prompting and no network here.

The bridge listens on port 8815 by default. omero2pandas' default port, 4064,
is OMERO's own Ice port: a script that passes ``port=4064`` must be changed to
the bridge's port (a warning says so).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import urlsplit

from flight_client import errors

LOGGER = logging.getLogger(__name__)

DEFAULT_PORT = 8815
OMERO_ICE_PORT = 4064
SESSION_USER = "__session__"

ENV_URL = "OMERO_FLIGHT_URL"
ENV_HOST = "OMERO_FLIGHT_HOST"
ENV_PORT = "OMERO_FLIGHT_PORT"
ENV_USER = "OMERO_FLIGHT_USER"
ENV_PASSWORD = "OMERO_FLIGHT_PASSWORD"
ENV_TLS_ROOT_CERTS = "OMERO_FLIGHT_TLS_ROOT_CERTS"

_SCHEMES = {"grpc": False, "grpc+tcp": False, "grpc+tls": True}


class Login(TypedDict, total=False):
    """How a function call reaches the bridge, as omero2pandas takes it: a connection
    (``omero_connector``: a :class:`~flight_client.connection.Connection` or an omero-py
    client) or the details to log in with."""

    omero_connector: Any
    server: str | None
    port: int | str | None
    username: str | None
    password: str | None


#: omero2pandas' positional order of the login parameters (after a function's own).
LOGIN_ORDER: tuple[str, ...] = ("omero_connector", "server", "port", "username", "password")
LOGIN_NAMES: frozenset[str] = frozenset(LOGIN_ORDER)


@dataclass(frozen=True)
class Details:
    """Where the bridge is and who logs in; fields are None until known."""

    host: str | None = None
    port: int | None = None
    tls: bool = False
    username: str | None = None
    password: str | None = None
    tls_root_certs: bytes | None = None

    @property
    def url(self) -> str:
        scheme = "grpc+tls" if self.tls else "grpc"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port or DEFAULT_PORT}"

    def missing(self) -> list[str]:
        """What is still needed to log in, phrased for an error message."""
        out = []
        if not self.host:
            out.append(f"the bridge address (server=, or {ENV_URL} / {ENV_HOST})")
        if not self.username:
            out.append(f"a username (username=, {ENV_USER}, or an omero-user-token)")
        if self.password is None:
            out.append(f"a password (password= or {ENV_PASSWORD})")
        return out

    def missing_error(self) -> errors.MissingConnectionDetails:
        """The error naming what is still missing."""
        return errors.MissingConnectionDetails("cannot connect: missing "
                                               + "; ".join(self.missing()))

    def __repr__(self) -> str:
        return f"Details(url={self.url!r}, username={self.username!r})"


def _parse_port(value: Any, what: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise errors.InvalidRequest(f"{what} must be a port number, got {value!r}") from None
    if not 0 < port < 65536:
        raise errors.InvalidRequest(f"{what} must be between 1 and 65535, got {port}")
    return port


def parse_server(server: str) -> tuple[str, int | None, bool | None]:
    """Split ``host``, ``host:port`` or a ``grpc[+tls]://`` URL into (host, port, tls)."""
    text = server.strip()
    tls: bool | None = None
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme not in _SCHEMES:
            raise errors.InvalidRequest(
                f"unsupported scheme in {server!r}: use grpc://host:port or grpc+tls://host:port"
            )
        tls = _SCHEMES[scheme]
    else:
        text = "grpc://" + text
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        raise errors.InvalidRequest(f"invalid port in {server!r}") from None
    if not parts.hostname:
        raise errors.InvalidRequest(f"no host name in {server!r}")
    return parts.hostname, port, tls


def _read_certs(value: str | bytes | os.PathLike[str] | None) -> bytes | None:
    if value is None or value == "":
        return None
    if isinstance(value, bytes):
        return value
    text = os.fspath(value)
    if "-----BEGIN" in text:
        return text.encode()
    try:
        return Path(text).expanduser().read_bytes()
    except OSError as exc:
        raise errors.InvalidRequest(f"cannot read TLS root certificates {text!r}: {exc}") from None


def _user_token() -> tuple[str, str, int] | None:
    """(session key, OMERO host, OMERO port) from omero-user-token, if installed and set."""
    try:
        import omero_user_token
    except ImportError:
        return None
    try:
        token = omero_user_token.get_token()
    except Exception:  # noqa: BLE001 - a broken token store must not stop a login
        LOGGER.warning("could not read the omero-user-token", exc_info=True)
        return None
    if not token or "@" not in token:
        return None
    key, _, where = token.partition("@")
    host, _, port = where.rpartition(":")
    return key, host, int(port) if port.isdigit() else OMERO_ICE_PORT


def omero_session(client: Any) -> tuple[str, str | None]:
    """Session key and host of an omero-py ``client`` or ``BlitzGateway`` (duck-typed)."""
    inner = getattr(client, "c", None) or client
    get_session_id = getattr(inner, "getSessionId", None)
    if get_session_id is None:
        raise TypeError(
            f"client must be an omero-py client or BlitzGateway, got {type(client).__name__}"
        )
    host = None
    get_property = getattr(inner, "getProperty", None)
    if get_property is not None:
        host = get_property("omero.host") or None
    return str(get_session_id()), host


def resolve_details(
    server: str | None = None,
    port: int | str | None = None,
    username: str | None = None,
    password: str | None = None,
    session_key: str | None = None,
    allow_token: bool = True,
    client: Any = None,
    tls_root_certs: str | bytes | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Details:
    """Merge arguments, environment and omero-user-token; no prompting, no network."""
    env = os.environ if environ is None else environ
    omero_host = None
    if client is not None:
        session_key, omero_host = omero_session(client)

    host = url_port = tls = None
    if server:
        host, url_port, tls = parse_server(str(server))
    elif env.get(ENV_URL):
        host, url_port, tls = parse_server(env[ENV_URL])
        if port is None:
            port = url_port
        url_port = None
    elif env.get(ENV_HOST):
        host = env[ENV_HOST].strip()
    if port is None and env.get(ENV_PORT):
        port = env[ENV_PORT]
    final_port = url_port or (None if port is None else _parse_port(port, "port"))
    if final_port == OMERO_ICE_PORT:
        LOGGER.warning(
            "port 4064 is OMERO's Ice port; an omero-flight bridge listens on %d by default",
            DEFAULT_PORT,
        )

    certs = _read_certs(tls_root_certs if tls_root_certs is not None
                        else env.get(ENV_TLS_ROOT_CERTS))
    if tls is None:
        tls = certs is not None

    if session_key:
        username, password = SESSION_USER, session_key
    else:
        if username is None:
            username = env.get(ENV_USER) or None
        if password is None and env.get(ENV_USER) in (None, "", username):
            password = env.get(ENV_PASSWORD)  # not another user's password
        if username is None and allow_token:
            token = _user_token()
            if token is not None:
                key, token_host, _ = token
                username, password = SESSION_USER, key
                omero_host = omero_host or token_host
                LOGGER.info("using the omero-user-token session for %s", token_host)
    if host is None and omero_host:
        # The OMERO server named by a session: assume the bridge runs beside it.
        host = omero_host
    return Details(host=host, port=final_port or DEFAULT_PORT, tls=bool(tls),
                   username=username, password=password, tls_root_certs=certs)
