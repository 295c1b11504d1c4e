"""``omero-flight serve`` as users run it: first start, TLS, refusing unsafe settings."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess

import pyarrow.flight as flight
import pytest

from tests.processes import CLI


def self_signed(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_first_start_with_tls_creates_root(tmp_path):
    cert, key = self_signed(tmp_path)
    store = tmp_path / "store"
    proc = subprocess.Popen(CLI + ["serve", "--store", str(store), "--port", "0",
                                   "--tls-cert", str(cert), "--tls-key", str(key)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        password = re.search(r"password: (\S+)", lines[0]).group(1)
        url = re.search(r"on (grpc\+tls://\S+)", "".join(lines)).group(1)
        assert (store / "root-password").read_text().strip() == password
        assert os.stat(store / "root-password").st_mode & 0o777 == 0o600
        assert os.stat(store / "secret.key").st_mode & 0o777 == 0o600
        client = flight.FlightClient(url, tls_root_certs=cert.read_bytes())
        header = client.authenticate_basic_token("root", password)
        options = flight.FlightCallOptions(headers=[header])
        result = list(client.do_action(flight.Action("whoami", b""), options=options))
        assert json.loads(result[0].body.to_pybytes())["admin"] is True
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_refuses_public_address_without_auth(tmp_path):
    done = subprocess.run(CLI + ["serve", "--store", str(tmp_path / "s"), "--host", "0.0.0.0",
                                 "--insecure-no-auth"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "without authentication" in done.stderr and "Traceback" not in done.stderr


def test_user_commands(tmp_path):
    store = str(tmp_path / "s")

    def run(*args, stdin=""):
        return subprocess.run(CLI + list(args) + ["--store", store], input=stdin,
                              capture_output=True, text=True, timeout=60)

    assert run("group", "add", "lab", "--permissions", "read-only").returncode == 0
    assert run("user", "add", "eve", "--group", "lab", "--password-stdin",
               stdin="pw\n").returncode == 0
    assert "eve" in run("user", "list").stdout
    bad = run("user", "add", "eve", "--group", "lab", "--password-stdin", stdin="pw\n")
    assert bad.returncode == 2 and "already exists" in bad.stderr
    assert run("user", "remove", "eve").returncode == 0


def test_shutdown_grace_setting():
    from flight_server.config import ConfigError, load_settings

    assert load_settings({}, environ={}).shutdown_grace == 30.0
    env = {"OMERO_FLIGHT_SHUTDOWN_GRACE": "2.5"}
    assert load_settings({}, environ=env).shutdown_grace == 2.5
    assert load_settings({"shutdown_grace": 0}, environ=env).shutdown_grace == 0
    for bad in (-1, "nan", "inf"):
        with pytest.raises(ConfigError, match="shutdown_grace"):
            load_settings({"shutdown_grace": bad}, environ={})


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_idle_server_stops_at_once_on_a_signal(tmp_path, sig):
    proc = subprocess.Popen(CLI + ["serve", "--store", str(tmp_path / "s"), "--port", "0",
                                   "--shutdown-grace", "600"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while "serving" not in proc.stdout.readline():
            assert proc.poll() is None
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0  # nothing running: no wait for the grace period
        assert "stopping" in proc.stdout.read()
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
