"""The health endpoints over real HTTP, the store's readiness, the signing-key file."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys

import pytest

from flight_server.backends.local import LocalStore
from flight_server.config import ConfigError, load_settings
from flight_server.health import ReadinessCheck, start_health_server
from flight_server.token_key import MIN_KEY_BYTES, read_token_key

CLI = [sys.executable, "-m", "flight_server.cli"]


def get(port: int, path: str, method: str = "GET") -> tuple[int, dict, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        body = response.read()
        return response.status, json.loads(body), dict(response.getheaders())
    finally:
        conn.close()


class Switch:
    """A probe that fails while ``down`` is set, counting its calls."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionRefusedError("secret detail: backend at 10.0.0.1 refused")


@pytest.fixture
def health():
    switch = Switch()
    server = start_health_server("127.0.0.1", 0, switch, cache_seconds=0)
    yield server, switch
    server.close()


def test_live_ready_and_not_ready(health):
    server, switch = health
    assert get(server.port, "/livez")[:2] == (200, {"status": "live"})
    assert get(server.port, "/readyz")[:2] == (200, {"status": "ready"})
    switch.down = True
    status, body, headers = get(server.port, "/readyz")
    assert (status, body) == (503, {"status": "not ready"})
    assert get(server.port, "/livez")[:2] == (200, {"status": "live"})
    # Nothing but the status: no error text, no versions.
    assert "Python" not in headers["Server"] and headers["Content-Type"] == "application/json"
    switch.down = False
    assert get(server.port, "/readyz?verbose=1")[:2] == (200, {"status": "ready"})


@pytest.mark.parametrize("path", ["/", "/healthz", "/livez/x", "/readyz/../livez", "/metrics"])
def test_other_paths_are_404(health, path):
    server, _ = health
    assert get(server.port, path)[:2] == (404, {"status": "not found"})


def test_other_methods_refused(health):
    server, switch = health
    status, body, _ = get(server.port, "/readyz", method="POST")
    assert status == 501 and body == {"status": "error 501"}
    assert switch.calls == 0


def test_readiness_result_is_reused_briefly():
    switch = Switch()
    check = ReadinessCheck(switch, cache_seconds=3600)
    assert check() is True and check() is True
    assert switch.calls == 1
    switch.down = True
    assert check() is True  # cached: a flood of probes reaches the backend once
    assert ReadinessCheck(switch, cache_seconds=0)() is False


def test_store_ping_needs_its_catalog(tmp_path):
    store = LocalStore(tmp_path / "store")
    store.ping()
    (tmp_path / "store" / "catalog.sqlite").rename(tmp_path / "elsewhere.sqlite")
    with pytest.raises(Exception, match="unable to open"):
        store.ping()


def test_health_port_settings():
    settings = load_settings({}, environ={"OMERO_FLIGHT_HEALTH_PORT": "8816"})
    assert settings.health_port == 8816
    assert load_settings({}, environ={}).health_port is None
    with pytest.raises(ConfigError, match="health_port and port are both 8815"):
        load_settings({"health_port": 8815}, environ={})
    with pytest.raises(ConfigError, match="health_port 70000 is out of range"):
        load_settings({"health_port": 70000}, environ={})
    with pytest.raises(ConfigError, match="'health_port' has an invalid value 'x'"):
        load_settings({}, environ={"OMERO_FLIGHT_HEALTH_PORT": "x"})


# -- the signing key file ---------------------------------------------------------------

def key_file(tmp_path, mode: int, size: int = MIN_KEY_BYTES):
    path = tmp_path / "token.key"
    path.write_bytes(os.urandom(size))
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_key_file_private(tmp_path, mode):
    path = key_file(tmp_path, mode)
    assert read_token_key(path) == path.read_bytes()
    assert read_token_key(None) is None


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o620, 0o666])
def test_key_file_others_refused(tmp_path, mode):
    with pytest.raises(ConfigError, match=f"token_secret_file .* has mode {mode:04o}"):
        read_token_key(key_file(tmp_path, mode))


def test_key_file_readable_by_own_group(tmp_path):
    path = key_file(tmp_path, 0o640)  # as a Kubernetes Secret in the pod's fsGroup
    assert read_token_key(path) == path.read_bytes()


def test_key_file_readable_by_another_group(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("giving a file to a group this process is not in needs root")
    path = key_file(tmp_path, 0o640)
    os.chown(path, -1, max(os.getgroups() + [os.getegid()]) + 4242)
    with pytest.raises(ConfigError, match="readable by group .* which this process is not in"):
        read_token_key(path)


def test_key_file_short_or_missing(tmp_path):
    with pytest.raises(ConfigError, match="holds 16 bytes; a signing key needs at least 32"):
        read_token_key(key_file(tmp_path, 0o600, size=16))
    with pytest.raises(ConfigError, match="does not exist"):
        read_token_key(tmp_path / "nope")


def test_serve_signs_with_the_key_file(tmp_path):
    from flight_server.cli.serve import make_server
    from flight_server.service import FlightService

    path = key_file(tmp_path, 0o600)
    settings = load_settings({"port": 0, "store": str(tmp_path / "s")},
                             environ={"OMERO_FLIGHT_TOKEN_SECRET_FILE": str(path)})
    store = LocalStore(settings.store)
    server: FlightService = make_server(settings, store)
    try:
        # Two servers with the same key accept each other's tokens.
        other = make_server(settings, LocalStore(tmp_path / "other"))
        try:
            token = server.signer.issue("alice")
            assert other.signer.verify(token) == "alice"
        finally:
            other.shutdown()
    finally:
        server.shutdown()


def test_serve_refuses_a_readable_key_file(tmp_path):
    path = key_file(tmp_path, 0o644)
    done = subprocess.run(CLI + ["serve", "--store", str(tmp_path / "s"), "--port", "0",
                                 "--token-secret-file", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "has mode 0644" in done.stderr and "Traceback" not in done.stderr


def test_serve_store_with_health_port(tmp_path):
    from tests.deploy.launch import free_port

    health_port = free_port()
    proc = subprocess.Popen(CLI + ["serve", "--store", str(tmp_path / "s"), "--port", "0",
                                   "--health-port", str(health_port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(4)]
        assert f"health endpoints: http://127.0.0.1:{health_port}/livez" in "".join(lines)
        assert get(health_port, "/livez")[:2] == (200, {"status": "live"})
        assert get(health_port, "/readyz")[:2] == (200, {"status": "ready"})
        # The port is taken: a second bridge says so and exits.
        done = subprocess.run(CLI + ["serve", "--store", str(tmp_path / "t"), "--port", "0",
                                     "--health-port", str(health_port)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2
        assert f"health_port {health_port}:" in done.stderr and "Traceback" not in done.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
