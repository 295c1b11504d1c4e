"""A TLS bridge: the client trusts it through OMERO_FLIGHT_TLS_ROOT_CERTS."""

from __future__ import annotations

import shutil
import subprocess

import pandas as pd
import pytest

import flight_client
from flight_client.details import ENV_PASSWORD, ENV_TLS_ROOT_CERTS, ENV_URL, ENV_USER


@pytest.fixture(scope="module")
def tls_bridge(tmp_path_factory):
    from flight_server.service import FlightService
    from tests.conftest import PASSWORDS, Bridge, seed_store

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    # tests.conftest.start_bridge listens on grpc:// only, so serve TLS here.
    store = seed_store(folder / "store")
    server = FlightService(store, "grpc+tls://127.0.0.1:0",
                           tls_certificates=[(cert.read_bytes(), key.read_bytes())])
    yield Bridge(server.url, "127.0.0.1", server.port, store, store.path, dict(PASSWORDS),
                 server), cert
    server.shutdown()


def test_tls_from_environment(tls_bridge, monkeypatch):
    bridge, cert = tls_bridge
    assert bridge.url.startswith("grpc+tls://")
    monkeypatch.setenv(ENV_URL, bridge.url)
    monkeypatch.setenv(ENV_USER, "alice")
    monkeypatch.setenv(ENV_PASSWORD, bridge.passwords["alice"])
    monkeypatch.setenv(ENV_TLS_ROOT_CERTS, str(cert))
    ann = flight_client.upload_table(pd.DataFrame({"a": [1, 2]}), "tls", parent_id=1)
    assert list(flight_client.read_table(annotation_id=ann)["a"]) == [1, 2]


def test_untrusted_certificate_fails(tls_bridge):
    bridge, _ = tls_bridge
    with pytest.raises(flight_client.ConnectionFailed, match="TLS handshake"):
        flight_client.connect_to_omero(server=bridge.url, username="alice",
                                       password=bridge.passwords["alice"], interactive=False)
