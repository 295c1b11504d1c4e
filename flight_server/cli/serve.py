"""``omero-flight serve``: run the bridge over the embedded store."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from pathlib import Path

from flight_server.backends.local import LocalStore
from flight_server.config import ConfigError, Settings, is_loopback, load_settings
from flight_server.errors import BridgeError
from flight_server.service import FlightService

log = logging.getLogger(__name__)

ROOT_PASSWORD_FILE = "root-password"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="run the Flight server over the embedded store",
        description="Serve OMERO.tables over Arrow Flight from an embedded store folder. "
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
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ... (default INFO)")
    p.set_defaults(func=run)


def ensure_root(store: LocalStore, out=sys.stdout) -> str | None:
    """Create the admin ``root`` on first start; its password goes to a 0600 file and ``out``."""
    if any(u.username == "root" for u in store.list_users()):
        return None
    password = secrets.token_urlsafe(18)
    store.add_user("root", password, admin=True)
    path = store.path / ROOT_PASSWORD_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    print(f"Created admin user 'root' with password: {password}\n"
          f"(also saved in {path}; shown only once)", file=out, flush=True)
    return password


def make_server(settings: Settings, store: LocalStore) -> FlightService:
    """A started server for these settings over ``store``."""
    tls = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        tls = [(Path(settings.tls_cert).read_bytes(), Path(settings.tls_key).read_bytes())]
    if not is_loopback(settings.host) and tls is None:
        log.warning("serving %s without TLS: passwords and tokens travel in clear text",
                    settings.host)
    return FlightService(
        store, settings.location, require_auth=not settings.insecure_no_auth,
        token_lifetime=settings.token_lifetime, tls_certificates=tls,
        split_rows=settings.split_rows, spool_dir=settings.spool_dir,
    )


def run(args: argparse.Namespace) -> int:
    from flight_server.cli import CliError

    given = {k: getattr(args, k, None) for k in
             ("host", "port", "store", "tls_cert", "tls_key", "insecure_no_auth", "split_rows",
              "log_level")}
    try:
        settings = load_settings(given, args.config)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    logging.getLogger().setLevel(settings.log_level.upper())
    try:
        store = LocalStore(settings.store)
        ensure_root(store)
        server = make_server(settings, store)
    except (BridgeError, OSError) as exc:
        raise CliError(str(exc)) from None
    auth = "no authentication" if settings.insecure_no_auth else "authentication required"
    print(f"omero-flight serving {store.path} on {server.url} ({auth})", flush=True)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0
