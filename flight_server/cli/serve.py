"""``omero-flight serve``: run the bridge over the embedded store, or over OMERO."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the server modules load when serve runs: the client needs none of them
    from flight_server.backends.base import Backend
    from flight_server.backends.local import LocalStore
    from flight_server.config import Settings
    from flight_server.health import HealthServer
    from flight_server.service import FlightService

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

log = logging.getLogger(__name__)

ROOT_PASSWORD_FILE = "root-password"
#: After the drain deadline, how long cancelled calls get to end before the process exits.
CANCEL_WAIT = 5.0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="run the Flight server over the embedded store or an OMERO server",
        description="Serve OMERO.tables over Arrow Flight from an embedded store folder, or "
                    "with --omero-host from an OMERO server (each user signs in with their "
                    "OMERO account or session key). "
                    "Settings: arguments > OMERO_FLIGHT_* environment > --config TOML > defaults.",
    )
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8815; 0 picks a free one)")
    p.add_argument("--store", help="store folder (default $OMERO_FLIGHT_HOME or "
                                   "~/.local/share/omero-flight)")
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--tls-cert", help="PEM certificate chain; serve grpc+tls")
    p.add_argument("--tls-key", help="PEM private key for --tls-cert")
    p.add_argument("--insecure-no-auth", action="store_true", default=None,
                   help="no sign-in, every call runs as root (loopback addresses only)")
    p.add_argument("--split-rows", type=int,
                   help="rows per endpoint for large range reads (default 1000000)")
    p.add_argument("--shutdown-grace", type=float,
                   help="on SIGTERM/SIGINT, seconds running calls may take to finish before "
                        "they are cancelled (default 30)")
    p.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, metavar="LEVEL",
                   help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default INFO)")
    p.add_argument("--omero-host", help="serve this OMERO server instead of the store")
    p.add_argument("--omero-port", type=int, help="OMERO's SSL port (default 4064)")
    p.add_argument("--omero-idle-timeout", type=float,
                   help="close a user's OMERO session after this many idle seconds (default 600)")
    p.add_argument("--omero-max-calls", type=int,
                   help="OMERO calls the bridge runs at once, across users (default 8)")
    p.add_argument("--omero-call-timeout", type=float,
                   help="abandon an OMERO call unanswered after this many seconds (default 600)")
    p.add_argument("--omero-data-dir",
                   help="OMERO's data directory (e.g. /OMERO), readable by the bridge: after "
                        "the caller's OMERO session may load a table's OriginalFile, read its "
                        "HDF5 file directly instead of through OMERO.tables")
    p.add_argument("--omero-web-url",
                   help="OMERO.web (OMERO Plus) HTTPS address, for the register_table action "
                        "that registers TileDB tables in place with the caller's session")
    p.add_argument("--health-port", type=int,
                   help="serve HTTP GET /livez and /readyz on this port of --host "
                        "(default off; the deploy files use 8816; 0 picks a free one)")
    p.add_argument("--token-secret-file",
                   help="file whose bytes sign bearer tokens, the same for every replica "
                        "(mode 0600 or 0400; default: a key the backend keeps)")
    p.add_argument("--advertise",
                   help="scale-out: the URL clients reach this replica at (e.g. "
                        "grpc://bridge-1:8815), listed in every read's endpoints")
    p.add_argument("--peers",
                   help="scale-out: the other replicas' URLs, comma-separated; they serve the "
                        "same store (or OMERO) with the same --token-secret-file")
    p.set_defaults(func=run)


def ensure_root(store: LocalStore, out=sys.stdout) -> str | None:
    """Create the admin ``root`` on first start; its password goes to a 0600 file and ``out``."""
    from flight_server.errors import AlreadyExists

    if any(u.username == "root" for u in store.list_users()):
        return None
    password = secrets.token_urlsafe(18)
    try:
        store.add_user("root", password, admin=True)
    except AlreadyExists:  # a replica starting on the same new store created it first
        return None
    path = store.path / ROOT_PASSWORD_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    print(f"Created admin user 'root' with password: {password}\n"
          f"(also saved in {path}; shown only once)", file=out, flush=True)
    return password


def make_backend(settings: Settings, create_root: bool = True) -> Backend:
    """The backend these settings choose: OMERO with ``omero_host``, else the store.

    ``create_root=False`` leaves the first start's ``root`` to :func:`ensure_root`,
    called once the server listens (a port in use must not make a password first).
    """
    from flight_server.backends.local import LocalStore
    from flight_server.errors import BridgeError

    if settings.uses_omero:
        try:
            from flight_server.backends.omero import OmeroBackend
        except ImportError as exc:
            raise BridgeError(str(exc)) from None
        assert settings.omero_host is not None
        return OmeroBackend(settings.omero_host, settings.omero_port,
                            idle_timeout=settings.omero_idle_timeout,
                            max_calls=settings.omero_max_calls,
                            call_timeout=settings.omero_call_timeout,
                            data_dir=settings.omero_data_dir)
    store = LocalStore(settings.store)
    if create_root:
        ensure_root(store)
    return store


def make_server(settings: Settings, store: Backend) -> FlightService:
    """A started server for these settings over ``store`` (any backend)."""
    from flight_server.config import is_loopback
    from flight_server.service import FlightService
    from flight_server.token_key import read_token_key

    tls = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        tls = [(Path(settings.tls_cert).read_bytes(), Path(settings.tls_key).read_bytes())]
    if not is_loopback(settings.host) and tls is None:
        log.warning("serving %s without TLS: passwords and tokens travel in clear text",
                    settings.host)
    return FlightService(
        store, settings.location, require_auth=not settings.insecure_no_auth,
        token_lifetime=settings.token_lifetime, tls_certificates=tls,
        split_rows=settings.split_rows,
        spool_dir=settings.spool_dir or getattr(store, "tmp", None),
        omero_web_url=settings.omero_web_url,
        token_secret=read_token_key(settings.token_secret_file),
        replicas=settings.replica_locations,
    )


def run(args: argparse.Namespace) -> int:
    # Ctrl-C (or SIGTERM) during start-up only sets ``stop``, checked once the bridge is up:
    # a KeyboardInterrupt raised in the middle of an import can be swallowed by Python
    # ("Exception ignored in ...") and leave the bridge running. A second one interrupts.
    starting = threading.Event()
    starting.set()
    with stop_signals(impatient=starting) as (stop, hurry):
        settings, backend, server, health = start(args)
        starting.clear()
        if stop.is_set():  # interrupted while starting: nothing was served yet
            if health is not None:
                health.close()
            server.shutdown()
            backend.close()
            raise KeyboardInterrupt
        auth = "no authentication" if settings.insecure_no_auth else "authentication required"
        source = (f"OMERO at {settings.omero_host}:{settings.omero_port}" if settings.uses_omero
                  else str(getattr(backend, "path", settings.store)))
        if settings.omero_data_dir is not None:
            source += f" (tables read directly from {settings.omero_data_dir})"
        print(f"omero-flight serving {source} on {server.url} ({auth})", flush=True)
        if health is not None:
            print(f"health endpoints: {health.url}/livez {health.url}/readyz", flush=True)
        while not stop.wait(1.0):
            pass
        if health is not None:
            health.close()
        drained = drain(server, settings.shutdown_grace, hurry)
    if drained:
        backend.close()
        return 0
    # Calls stuck in the network (a client that neither sends nor reads): the process must
    # still end. Nothing uncommitted is visible (its temporary file stays in the store).
    closing = threading.Thread(target=backend.close, name="backend-close", daemon=True)
    closing.start()
    closing.join(CANCEL_WAIT)
    logging.shutdown()
    os._exit(1)


def start(args: argparse.Namespace
          ) -> tuple[Settings, Backend, FlightService, HealthServer | None]:
    """Settings, backend, listening server and health endpoint (or None) for ``args``;
    what the bridge needs is imported here, so that the client commands never load it."""
    import pyarrow as pa

    from flight_server.backends.local import LocalStore
    from flight_server.cli import CliError
    from flight_server.config import ConfigError, load_settings
    from flight_server.errors import BridgeError
    from flight_server.health import start_health

    given = {k: getattr(args, k, None) for k in
             ("host", "port", "store", "tls_cert", "tls_key", "insecure_no_auth", "split_rows",
              "shutdown_grace", "log_level", "omero_host", "omero_port", "omero_idle_timeout",
              "omero_max_calls", "omero_call_timeout", "omero_data_dir", "omero_web_url",
              "health_port", "token_secret_file", "advertise", "peers")}
    try:
        settings = load_settings(given, args.config)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    level = settings.log_level.upper()
    if level not in LOG_LEVELS:
        raise CliError(f"log_level must be one of {', '.join(LOG_LEVELS)}, "
                       f"got {settings.log_level!r}")
    logging.getLogger().setLevel(level)
    try:
        backend = make_backend(settings, create_root=False)
    except (BridgeError, OSError) as exc:
        raise CliError(str(exc)) from None
    try:
        check_port_free(settings.host, settings.port)
        server = make_server(settings, backend)
    except BaseException as exc:
        backend.close()
        if isinstance(exc, BridgeError | ConfigError | OSError | pa.ArrowException):
            raise CliError(_server_error(settings, exc)) from None
        raise
    try:
        try:
            if isinstance(backend, LocalStore):
                ensure_root(backend)
        except OSError as exc:
            raise CliError(f"cannot create the admin user root: {exc}") from None
        try:
            health = start_health(settings, backend)  # None unless health_port is set
        except OSError as exc:
            raise CliError(f"health_port {settings.health_port}: {exc}") from None
    except BaseException:  # a second Ctrl-C too: stop cleanly
        server.shutdown()
        backend.close()
        raise
    return settings, backend, server, health


def check_port_free(host: str, port: int) -> None:
    """Raise :class:`OSError` (EADDRINUSE) if something listens on ``host:port`` already.

    gRPC would only log the clash and fail with "Server did not start properly".
    """
    if not port:
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port,
                                                             type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        return  # gRPC reports an address it cannot resolve itself
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
        probe.bind(address)


def _server_error(settings: Settings, exc: BaseException) -> str:
    """One line for a server that could not start; a port in use says so."""
    text = " ".join(str(exc).split())
    if (getattr(exc, "errno", None) == errno.EADDRINUSE or "in use" in text.lower()
            or "did not start properly" in text.lower()):
        return (f"cannot listen on {settings.host}:{settings.port}: the port is in use "
                "(another bridge?); choose another with --port")
    return text


@contextmanager
def stop_signals(impatient: threading.Event | None = None
                 ) -> Iterator[tuple[threading.Event, threading.Event]]:
    """SIGTERM and SIGINT set ``stop``; a second one sets ``hurry`` (cancel without waiting),
    or, while ``impatient`` is set (start-up), raises KeyboardInterrupt."""
    stop, hurry = threading.Event(), threading.Event()

    def handle(signum: int, frame: object) -> None:
        if stop.is_set():
            hurry.set()
            if impatient is not None and impatient.is_set():
                raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop, hurry
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def drain(server: FlightService, grace: float, hurry: threading.Event | None = None) -> bool:
    """Stop a server gracefully; True when every call ended.

    New calls are refused at once; running ones may finish for ``grace``
    seconds (or until ``hurry`` is set), then streams and uploads are cancelled
    at their next batch (an upload cut short stores nothing) and given
    :data:`CANCEL_WAIT` seconds to end.
    """
    hurry = hurry or threading.Event()
    done = threading.Event()

    def shutdown() -> None:
        server.shutdown()  # gRPC: refuse new calls, wait for the running ones
        done.set()

    print("omero-flight stopping: no new calls; running calls may finish for "
          f"{grace:g} s", flush=True)
    threading.Thread(target=shutdown, name="shutdown", daemon=True).start()
    deadline = time.monotonic() + grace
    while not done.wait(min(0.1, max(deadline - time.monotonic(), 0.0))):
        if hurry.is_set() or time.monotonic() >= deadline:
            break
    if done.is_set():
        log.info("every call finished; stopped")
        return True
    log.warning("drain deadline passed: cancelling the calls still running")
    server.stopping.set()
    if done.wait(CANCEL_WAIT):
        log.info("running calls cancelled; stopped")
        return True
    log.error("calls still running %g s after cancellation; exiting anyway", CANCEL_WAIT)
    return False
