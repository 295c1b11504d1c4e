"""An HTTPS stand-in for OMERO Plus's in-place table registration, checking the protocol.

Endpoints (under an optional prefix), as omero2pandas 0.4.2 speaks to them:

* ``GET  /api/v0/token``: ``{"data": <csrf>}`` and a ``csrftoken`` cookie;
* ``POST /omero_plus/api/v0/table?bsession=<key>``: JSON ``{"uri", "name",
  "targets": ["Image:1", ...]}`` with headers ``X-CSRFToken`` (equal to the
  cookie), ``Referer`` (this server's origin, as Django checks over HTTPS),
  ``Content-Type: application/json`` and ``X-SecretToken``.

An unknown session is redirected to the login page, as OMERO.web does. The
stand-in opens the TileDB array at ``uri`` (through ``path_map``, server path
prefix -> local folder, to play shared storage mounted elsewhere) and compares
its ``SecretToken`` metadata with the header. Refusals are JSON
``{"message": ...}`` with 400, 403 or 404. Successes are recorded in
``registrations``.
"""

from __future__ import annotations

import http.server
import json
import secrets
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlsplit

from flight_protocol.tiledb import is_tiledb_array, secret_token

TOKEN_PATH = "/api/v0/token"
REGISTER_PATH = "/omero_plus/api/v0/table"
LINK_TYPES = {"Project", "Dataset", "Image", "Screen", "Plate", "Well", "Roi", "Folder"}


@dataclass
class Registration:
    annotation_id: int
    uri: str
    name: str
    targets: list[str]
    user: str


@dataclass
class OmeroPlus:
    """The stand-in's state; ``url`` is its HTTPS origin, ``ca_file`` the certificate to trust."""

    prefix: str = ""
    sessions: dict[str, str] = field(default_factory=dict)  # session key -> user name
    path_map: dict[str, Path] = field(default_factory=dict)  # server prefix -> local folder
    registrations: list[Registration] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    ca_file: Path | None = None
    _csrf: set[str] = field(default_factory=set)
    _server: http.server.ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def local_path(self, uri: str) -> Path:
        path = PurePosixPath(uri)
        for server_prefix, local in self.path_map.items():
            try:
                return Path(local, path.relative_to(server_prefix))
            except ValueError:
                continue
        return Path(str(path))

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "OMERO-Plus-stand-in"
    plus: OmeroPlus

    def log_message(self, format: str, *args: Any) -> None:  # quiet tests
        pass

    def _send(self, status: int, content: dict[str, Any], headers: dict[str, str] | None = None
              ) -> None:
        body = json.dumps(content).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _route(self) -> tuple[str, dict[str, list[str]]] | None:
        parts = urlsplit(self.path)
        if not parts.path.startswith(self.plus.prefix):
            return None
        return parts.path[len(self.plus.prefix):], parse_qs(parts.query)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        route = self._route()
        if route is None or route[0] != TOKEN_PATH:
            self._send(404, {"message": f"no page at {self.path}"})
            return
        csrf = secrets.token_urlsafe(24)
        with self.plus._lock:
            self.plus._csrf.add(csrf)
        self._send(200, {"data": csrf},
                   {"Set-Cookie": f"csrftoken={csrf}; Path=/; Secure; SameSite=Lax"})

    def do_POST(self) -> None:  # noqa: N802
        route = self._route()
        if route is None or route[0] != REGISTER_PATH:
            self._send(404, {"message": f"no page at {self.path}"})
            return
        _, query = route
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        record = {"headers": {k.lower(): v for k, v in self.headers.items()}, "query": query,
                  "body": raw}
        with self.plus._lock:
            self.plus.requests.append(record)
        status, content, headers = self._register(query, raw)
        self._send(status, content, headers)

    def _register(self, query: dict[str, list[str]], raw: bytes
                  ) -> tuple[int, dict[str, Any], dict[str, str] | None]:
        plus = self.plus
        user = plus.sessions.get((query.get("bsession") or [""])[0])
        if user is None:
            return 302, {}, {"Location": f"{plus.prefix}/webclient/login/?url={REGISTER_PATH}"}
        cookie = SimpleCookie(self.headers.get("Cookie") or "")
        csrf_cookie = cookie["csrftoken"].value if "csrftoken" in cookie else None
        if csrf_cookie is None or csrf_cookie not in plus._csrf:
            return 403, {"message": "CSRF Failed: CSRF cookie not set."}, None
        if self.headers.get("X-CSRFToken") != csrf_cookie:
            return 403, {"message": "CSRF Failed: CSRF token missing or incorrect."}, None
        if not (self.headers.get("Referer") or "").startswith(plus.url):
            return 403, {"message": "CSRF Failed: Referer checking failed - no Referer."}, None
        if self.headers.get("Content-Type") != "application/json":
            return 400, {"message": "expected a JSON body (Content-Type: application/json)"}, None
        try:
            body = json.loads(raw)
            uri, name, targets = body["uri"], body["name"], body["targets"]
        except (ValueError, KeyError, TypeError):
            return 400, {"message": "the body must be JSON with uri, name and targets"}, None
        if set(body) != {"uri", "name", "targets"} or not isinstance(targets, list) or not all(
                isinstance(t, str) and t.partition(":")[0] in LINK_TYPES
                and t.partition(":")[2].isdigit() for t in targets):
            return 400, {"message": f"bad registration request: {body!r}"}, None
        path = plus.local_path(uri)
        if not is_tiledb_array(path):
            return 404, {"message": f"No TileDB array found at {uri}"}, None
        token = self.headers.get("X-SecretToken")
        if not token:
            return 400, {"message": "Missing X-SecretToken header"}, None
        if secret_token(path) != token:
            return 403, {"message": f"SecretToken does not match the table at {uri}"}, None
        with plus._lock:
            annotation_id = 900 + len(plus.registrations)
            plus.registrations.append(Registration(annotation_id, uri, name, targets, user))
        return 200, {"data": {"file_annotation": annotation_id,
                              "original_file": annotation_id - 500}}, None


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 made with the openssl CLI: (cert, key)."""
    cert, key = folder / "omero-plus-cert.pem", folder / "omero-plus-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def start(folder: Path, prefix: str = "", **state: Any) -> OmeroPlus:
    """Serve a stand-in over HTTPS on a free loopback port (stop with ``.stop()``)."""
    cert, key = make_certificate(folder)
    plus = OmeroPlus(prefix=prefix.rstrip("/"), **state)
    handler = type("Handler", (_Handler,), {"plus": plus})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    plus._server, plus.ca_file = server, cert
    plus.url = f"https://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, name="omero-plus-stand-in", daemon=True).start()
    return plus
