"""HTTP liveness and readiness endpoints on their own port, for orchestrators.

Arrow Flight in Python cannot register gRPC's health service and Kubernetes'
gRPC probes cannot speak Flight, so ``omero-flight serve --health-port N``
answers plain HTTP beside the Flight port (as Dremio's Flight deployments do):

- ``GET /livez``: 200 while the process serves.
- ``GET /readyz``: 200 when the backend answers ``Backend.ping`` (the store's
  catalog opens; OMERO answers a ping with no user session), else 503.

Bodies are ``{"status": "..."}`` and nothing else: no version, no backend, no
error text (the reason a check failed goes to the log). Every other path is
404. No authentication: keep the port off the public network. Concurrent
``/readyz`` requests share one check, and a result is reused for
``cache_seconds``, so probing cannot flood the backend.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flight_server.backends.base import Backend
    from flight_server.config import Settings

log = logging.getLogger(__name__)

LIVE_PATH = "/livez"
READY_PATH = "/readyz"
#: The port the deploy files use (the setting is off by default).
DEFAULT_HEALTH_PORT = 8816


class ReadinessCheck:
    """``check()`` runs a probe raising when not ready; one at a time, briefly cached."""

    def __init__(self, probe: Callable[[], object], cache_seconds: float = 1.0) -> None:
        self.probe = probe
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._result: tuple[float, bool] | None = None

    def __call__(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if self._result is not None and now - self._result[0] < self.cache_seconds:
                return self._result[1]
            try:
                self.probe()
                ready = True
            except Exception as exc:  # any failure means not ready; the reason is only logged
                was_ready = self._result is None or self._result[1]
                log.log(logging.WARNING if was_ready else logging.DEBUG,
                        "not ready: %s: %s", type(exc).__name__, exc)
                ready = False
            if ready and self._result is not None and not self._result[1]:
                log.warning("ready again")
            self._result = (time.monotonic(), ready)
            return ready


class _Handler(BaseHTTPRequestHandler):
    server: _HealthHTTPServer
    server_version = "omero-flight"
    sys_version = ""
    timeout = 10  # seconds a client may take to send its request
    error_message_format = '{"status": "error %(code)d"}'
    error_content_type = "application/json"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path == LIVE_PATH:
            self._answer(200, "live")
        elif path == READY_PATH:
            ready = self.server.ready()
            self._answer(200 if ready else 503, "ready" if ready else "not ready")
        else:
            self._answer(404, "not found")

    def _answer(self, code: int, status: str) -> None:
        body = json.dumps({"status": status}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("health %s: " + format, self.client_address[0], *args)


class _HealthHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    ready: Callable[[], bool]


class _HealthHTTPServer6(_HealthHTTPServer):
    address_family = socket.AF_INET6


class HealthServer:
    """The endpoints on ``host:port`` (0 picks a free port), served by a daemon thread."""

    def __init__(self, host: str, port: int, ready: Callable[[], bool]) -> None:
        cls = _HealthHTTPServer6 if ":" in host else _HealthHTTPServer
        self._httpd = cls((host.strip("[]"), port), _Handler)
        self._httpd.ready = ready
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        name="omero-flight-health", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=10)
        self._httpd.server_close()


def start_health_server(host: str, port: int, probe: Callable[[], object],
                        cache_seconds: float = 1.0) -> HealthServer:
    """Serve ``/livez`` and ``/readyz`` (``probe`` raises when not ready) until ``close``."""
    return HealthServer(host, port, ReadinessCheck(probe, cache_seconds)).start()


def start_health(settings: Settings, backend: Backend) -> HealthServer | None:
    """The endpoints ``omero-flight serve`` runs for these settings (None: health_port unset)."""
    if settings.health_port is None:
        return None
    return start_health_server(settings.host, settings.health_port, backend.ping)
