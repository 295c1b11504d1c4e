"""The connection to a bridge, and how its details are found.

Details come from, in order:

1. arguments: ``server`` (a host name, ``host:port`` or a URL such as
   ``grpc://host:8815`` / ``grpc+tls://host:8815``), ``port``, ``username``,
   ``password``, ``session_key``, or an omero-py ``client``/``BlitzGateway``
   whose session is reused;
2. environment variables: ``OMERO_FLIGHT_URL``, ``OMERO_FLIGHT_HOST``,
   ``OMERO_FLIGHT_PORT``, ``OMERO_FLIGHT_USER``, ``OMERO_FLIGHT_PASSWORD``,
   ``OMERO_FLIGHT_TLS_ROOT_CERTS`` (a PEM file or PEM text);
3. an omero-user-token, when that package is installed: its OMERO session key is
   sent to the bridge as user ``__session__``;
4. a prompt (terminal, or a login form in Jupyter when ipywidgets is installed),
   unless ``interactive=False``, in which case the error lists what is missing.
   The terminal prompt asks only for what is still missing. A bridge that asks no
   sign-in (started with ``--insecure-no-auth``) is asked first, without
   credentials, so nothing is prompted for.

The bridge listens on port 8815 by default. omero2pandas' default port, 4064,
is OMERO's own Ice port: a script that passes ``port=4064`` must be changed to
the bridge's port (a warning says so).
"""

from __future__ import annotations

import getpass
import logging
import os
import sys
import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flight_client import errors
from flight_client.transport import Transport
from flight_protocol.messages import ACTION_HEALTH, ACTION_VERSION, ACTION_WHOAMI

LOGGER = logging.getLogger(__name__)

DEFAULT_PORT = 8815
OMERO_ICE_PORT = 4064
SESSION_USER = "__session__"
KEEP_ALIVE_SECONDS = 60.0
#: Seconds the unauthenticated call that asks whether a bridge wants a sign-in may take.
PROBE_TIMEOUT = 10.0

ENV_URL = "OMERO_FLIGHT_URL"
ENV_HOST = "OMERO_FLIGHT_HOST"
ENV_PORT = "OMERO_FLIGHT_PORT"
ENV_USER = "OMERO_FLIGHT_USER"
ENV_PASSWORD = "OMERO_FLIGHT_PASSWORD"
ENV_TLS_ROOT_CERTS = "OMERO_FLIGHT_TLS_ROOT_CERTS"

_SCHEMES = {"grpc": False, "grpc+tcp": False, "grpc+tls": True}


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
        import omero_user_token  # type: ignore[import-not-found]
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


def _omero_session(client: Any) -> tuple[str, str | None]:
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
        session_key, omero_host = _omero_session(client)

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


def _in_jupyter() -> bool:
    try:
        from IPython import get_ipython  # type: ignore[import-not-found]
    except ImportError:
        return False
    if type(get_ipython()).__name__ != "ZMQInteractiveShell":
        return False
    try:
        import ipywidgets  # type: ignore[import-not-found] # noqa: F401
    except ImportError:
        LOGGER.warning("in Jupyter without ipywidgets: install omero-flight[jupyter] "
                       "for a login form; prompting on the console instead")
        return False
    return True


def _prompt_terminal(details: Details) -> Details:
    """Ask on the terminal for what is missing, and only that."""
    host, port, tls = details.host, details.port, details.tls
    if not host:
        print("Connect to an omero-flight bridge", file=sys.stderr)
        server = input("Bridge address (host, host:port or grpc[+tls]://host:port): ").strip()
        if server:
            host, url_port, url_tls = parse_server(server)
            port, tls = url_port or port, tls if url_tls is None else url_tls
    where = replace(details, host=host, port=port, tls=tls).url if host else "the bridge"
    username = details.username or input(f"Username for {where}: ").strip() or None
    password = details.password
    if password is None and username:
        password = getpass.getpass(f"Password for {username} at {where}: ")
    return replace(details, host=host, port=port, tls=tls, username=username, password=password)


def _shutdown(transport: Transport | None, stop: threading.Event) -> None:
    stop.set()
    if transport is not None:
        transport.close()


def _keep_alive(transport: Transport, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        try:
            transport.action(ACTION_WHOAMI)
        except errors.OmeroFlightError as exc:
            LOGGER.warning("keep-alive ping failed: %s", exc)


class Connection:
    """A logged-in connection to an omero-flight bridge.

    Use it as ``with connect_to_omero(...) as conn:`` or pass it as
    ``omero_connector=`` to any function. It is closed by :meth:`shutdown`, at
    the end of a ``with`` block, when it is garbage-collected and at interpreter
    exit; using it afterwards raises :class:`~flight_client.errors.ConnectionClosed`.
    """

    def __init__(
        self,
        server: str | None = None,
        port: int | str | None = None,
        username: str | None = None,
        password: str | None = None,
        session_key: str | None = None,
        allow_token: bool = True,
        *,
        client: Any = None,
        tls_root_certs: str | bytes | os.PathLike[str] | None = None,
        timeout: float | None = None,
        retries: int = 3,
    ) -> None:
        if isinstance(client, Connection):
            raise TypeError("client= takes an omero-py client; pass a Connection as "
                            "omero_connector= instead")
        self.details = resolve_details(server, port, username, password, session_key,
                                       allow_token, client, tls_root_certs)
        self.timeout = timeout
        self.retries = retries
        self._transport: Transport | None = None
        self._stop = threading.Event()
        self._closed = False
        self._finalizer: weakref.finalize | None = None

    # -- state ------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def url(self) -> str:
        return self.details.url

    def connect(self, interactive: bool | None = True, keep_alive: bool = True) -> Connection:
        """Log in (once). ``interactive=None`` prompts only when stdin is a terminal."""
        if self._closed:
            raise errors.ConnectionClosed("this connection has been shut down; open a new one")
        if self._transport is not None:
            return self
        if interactive is None:
            interactive = sys.stdin is not None and sys.stdin.isatty()
        if self.details.missing() and self.details.host:
            transport = self._open_without_sign_in()
            if transport is not None:  # a bridge that wants no sign-in: nothing to ask
                self._started(transport, keep_alive, "without signing in (the bridge asks none)")
                return self
        if self.details.missing():
            if not interactive:
                raise errors.MissingConnectionDetails(
                    "cannot connect: missing " + "; ".join(self.details.missing())
                )
            if _in_jupyter():
                self._login_form(keep_alive)
                return self
            try:
                self.details = _prompt_terminal(self.details)
            except EOFError:  # no one to answer (stdin closed or redirected)
                raise errors.MissingConnectionDetails(
                    "cannot connect: missing " + "; ".join(self.details.missing())
                ) from None
            if self.details.missing():
                raise errors.MissingConnectionDetails(
                    "cannot connect: missing " + "; ".join(self.details.missing())
                )
        d = self.details
        transport = Transport(d.url, tls_root_certs=d.tls_root_certs, timeout=self.timeout,
                              retries=self.retries)
        try:
            transport.authenticate(d.username or "", d.password or "")
        except BaseException:
            transport.close()
            raise
        self._started(transport, keep_alive, f"as {d.username}")
        return self

    def _started(self, transport: Transport, keep_alive: bool, how: str) -> None:
        self._transport = transport
        self._finalizer = weakref.finalize(self, _shutdown, transport, self._stop)
        if keep_alive:
            threading.Thread(target=_keep_alive, args=(transport, self._stop, KEEP_ALIVE_SECONDS),
                             name="omero-flight-keepalive", daemon=True).start()
        LOGGER.info("connected to %s %s", self.details.url, how)

    def _open_without_sign_in(self) -> Transport | None:
        """A transport to a bridge that serves calls without a sign-in (one started with
        ``--insecure-no-auth``), or None when it wants one or cannot be reached now."""
        d = self.details
        probe_timeout = min(self.timeout or PROBE_TIMEOUT, PROBE_TIMEOUT)
        transport = Transport(d.url, tls_root_certs=d.tls_root_certs, timeout=probe_timeout,
                              retries=0)
        try:
            transport.action(ACTION_WHOAMI)
        except errors.OmeroFlightError:
            transport.close()
            return None
        except BaseException:
            transport.close()
            raise
        transport.retries, transport.timeout = self.retries, self.timeout
        return transport

    def _login_form(self, keep_alive: bool) -> None:
        """Show an ipywidgets login form; the connection opens when it is submitted."""
        from IPython.display import display  # type: ignore[import-not-found]
        from ipywidgets import widgets  # type: ignore[import-not-found]

        d = self.details
        server = widgets.Text(value=d.url if d.host else "", description="Bridge:")
        user = widgets.Text(value=d.username or "", description="Username:")
        password = widgets.Password(value=d.password or "", description="Password:")
        button = widgets.Button(description="Connect")
        output = widgets.Output()
        box = widgets.VBox([widgets.Label("Connect to an omero-flight bridge"),
                            server, user, password, button])

        def submit(_: Any) -> None:
            with output:
                try:
                    host, port, tls = parse_server(server.value)
                    self.details = replace(self.details, host=host,
                                           port=port or self.details.port,
                                           tls=self.details.tls if tls is None else tls,
                                           username=user.value or None,
                                           password=password.value or None)
                    self.connect(interactive=False, keep_alive=keep_alive)
                except errors.OmeroFlightError as exc:
                    print(f"Could not connect: {exc}")
                else:
                    print(f"Connected to {self.url}")
                    box.close()

        button.on_click(submit)
        display(box, output)

    @property
    def transport(self) -> Transport:
        """The Flight transport; connects on first use (prompting only on a terminal)."""
        if self._closed:
            raise errors.ConnectionClosed("this connection has been shut down; open a new one")
        if self._transport is None:
            self.connect(interactive=None)
        if self._transport is None:
            raise errors.MissingConnectionDetails("fill in the login form first")
        return self._transport

    def shutdown(self) -> None:
        """Close the connection; safe to call more than once."""
        self._closed = True
        if self._finalizer is not None:
            self._finalizer()
        else:
            self._stop.set()

    close = shutdown

    def __enter__(self) -> Connection:
        self.connect(interactive=None)
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._transport else "unopened"
        return f"<Connection {self.url} user={self.details.username!r} {state}>"

    def get_gateway(self) -> Any:
        """omero2pandas returns a BlitzGateway here; a bridge does not expose the OMERO API."""
        raise errors.NotSupported(
            "an omero-flight connection has no BlitzGateway: the bridge serves tables only; "
            "use omero-py directly for the rest of the OMERO API"
        )

    get_client = get_gateway

    # -- small server calls -----------------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        """Who the bridge thinks we are: user name, groups, ..."""
        return self.transport.action(ACTION_WHOAMI)

    def server_version(self) -> dict[str, Any]:
        return self.transport.action(ACTION_VERSION)

    def health(self) -> dict[str, Any]:
        return self.transport.action(ACTION_HEALTH)


#: omero2pandas' name for the connection class.
OMEROConnection = Connection


def connect_to_omero(
    client: Any = None,
    server: str | None = None,
    port: int | str | None = None,
    username: str | None = None,
    password: str | None = None,
    session_key: str | None = None,
    allow_token: bool = True,
    interactive: bool = True,
    keep_alive: bool = True,
) -> Connection:
    """Connect to a bridge and return the :class:`Connection` (omero2pandas' signature).

    ``server`` takes a host or a URL; ``port`` defaults to 8815 (the bridge's,
    not OMERO's 4064). Missing details are prompted for unless ``interactive``
    is False. ``keep_alive`` pings the bridge every minute so sessions stay open.
    """
    conn = Connection(server, port, username, password, session_key, allow_token, client=client)
    return conn.connect(interactive=interactive, keep_alive=keep_alive)


@contextmanager
def use_connection(
    omero_connector: Any = None,
    server: str | None = None,
    port: int | str | None = None,
    username: str | None = None,
    password: str | None = None,
) -> Iterator[Connection]:
    """The connection a function call runs on: the caller's, or one opened for this call."""
    if isinstance(omero_connector, Connection):
        if omero_connector.closed:
            raise errors.ConnectionClosed(
                "the connection passed as omero_connector has been shut down"
            )
        yield omero_connector
        return
    conn = Connection(server, port, username, password, client=omero_connector)
    try:
        conn.connect(interactive=None, keep_alive=False)
        yield conn
    finally:
        conn.shutdown()
