"""The container's and the systemd unit's exact ``serve`` command, environment and files
start a bridge in front of the OMERO stand-in; health follows OMERO up and down."""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from pathlib import Path

import pyarrow.flight as flight
import pytest

from tests.deploy import launch
from tests.standin.fixtures import SKIP_REASON, start_standin

pytestmark = pytest.mark.omero

WAIT = 60.0


def status(port: int, path: str) -> int | None:
    """The HTTP status of GET path (its body holds nothing but a status), None if no answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = json.loads(response.read())
    except OSError:
        return None
    finally:
        conn.close()
    assert set(body) == {"status"}
    return response.status


def wait_for(bridge: launch.Launch, path: str, expected: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT
    while (got := status(bridge.health_port, path)) != expected:
        if proc.poll() is not None or time.monotonic() > deadline:
            log = (bridge.root / "bridge.log").read_text()
            raise AssertionError(f"{path} answered {got}, not {expected}:\n{log}")
        time.sleep(0.2)


def whoami(bridge: launch.Launch, user: str, password: str) -> dict:
    client = flight.FlightClient(f"grpc+tls://127.0.0.1:{bridge.port}",
                                 tls_root_certs=bridge.tls_cert.read_bytes())
    try:
        header = client.authenticate_basic_token(user, password)
        options = flight.FlightCallOptions(headers=[header], timeout=30)
        (result,) = client.do_action(flight.Action("whoami", b""), options=options)
        return json.loads(result.body.to_pybytes())
    finally:
        client.close()


def healthcheck(bridge: launch.Launch) -> int:
    """Run the image's HEALTHCHECK in the image's environment; its exit status."""
    return subprocess.run(launch.image_healthcheck(bridge), env=bridge.env, cwd=bridge.cwd,
                          capture_output=True, timeout=30).returncode


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_container_and_systemd_bridges_follow_omero(tmp_path: Path):
    pytest.importorskip("omero", reason=SKIP_REASON)
    procs: dict[str, subprocess.Popen] = {}
    try:
        # A stand-in of this test's own: it is stopped halfway through.
        with start_standin(tmp_path / "standin") as standin:
            standin.seed.group("lab", "rw----")
            standin.seed.user("carol", "carol-password", groups=["lab"])
            bridges = {"container": launch.container(tmp_path / "image", standin),
                       "systemd": launch.systemd(tmp_path / "host", standin)}
            for name, bridge in bridges.items():
                procs[name] = bridge.start(bridge.root / "bridge.log")
            for name, bridge in bridges.items():
                wait_for(bridge, "/livez", 200, procs[name])
                wait_for(bridge, "/readyz", 200, procs[name])
                assert status(bridge.health_port, "/status") == 404
                # The bridge really serves: TLS from the deploy files' secrets, OMERO sign-in.
                assert whoami(bridge, "carol", "carol-password")["username"] == "carol"
            assert healthcheck(bridges["container"]) == 0
        # OMERO is gone: not ready (and the image's HEALTHCHECK fails), still live.
        for name, bridge in bridges.items():
            wait_for(bridge, "/readyz", 503, procs[name])
            assert status(bridge.health_port, "/livez") == 200
            assert procs[name].poll() is None
        assert healthcheck(bridges["container"]) == 1
    finally:
        for proc in procs.values():
            stop(proc)
