"""TLS that cannot work fails at once with one line that says why; it is never retried."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow.flight as flight
import pytest

from flight_client import errors
from tests.flight_client.transport.expected import one_line
from tests.flight_client.transport.servers import Counting, certificate


@dataclass(frozen=True)
class Certs:
    good: tuple[bytes, bytes]  # for IP 127.0.0.1, the address the tests connect to
    other: tuple[bytes, bytes]  # another self-signed certificate: the wrong CA
    elsewhere: tuple[bytes, bytes]  # for another host name only


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    folder = tmp_path_factory.mktemp("certs")
    return Certs(certificate(folder, "good"), certificate(folder, "other"),
                 certificate(folder, "elsewhere", "DNS:elsewhere.invalid"))


def tls_server(pair: tuple[bytes, bytes]) -> Counting:
    return Counting("grpc+tls://127.0.0.1:0", tls_certificates=[flight.CertKeyPair(*pair)])


def fails_once(transport, caplog, match: str, **options: object) -> errors.ConnectionFailed:
    """The error of a health call with 3 retries allowed; asserts none was made."""
    with caplog.at_level("WARNING", logger="flight_client.transport"), \
            pytest.raises(errors.ConnectionFailed, match=match) as info:
        transport(**options, retries=3).action("health")
    assert one_line(info.value), info.value
    assert not [r for r in caplog.records if "retry" in r.getMessage()]
    return info.value


def test_trusted_certificate_works(serve, transport, certs):
    server = serve(tls_server(certs.good))
    assert transport(server.url, tls_root_certs=certs.good[0]).action("health")["status"] == "ok"
    assert server.calls["do_action"] == 1


@pytest.mark.parametrize("trust", ["other", None], ids=["wrong-ca", "system-cas"])
def test_untrusted_certificate(serve, transport, caplog, certs, trust):
    server = serve(tls_server(certs.good))
    roots = None if trust is None else getattr(certs, trust)[0]
    err = fails_once(lambda **o: transport(server.url, tls_root_certs=roots, **o), caplog,
                     "TLS handshake")
    assert "OMERO_FLIGHT_TLS_ROOT_CERTS" in str(err) and server.url in str(err)
    assert server.calls.total() == 0


def test_certificate_for_another_host_name(serve, transport, caplog, certs):
    server = serve(tls_server(certs.elsewhere))
    fails_once(lambda **o: transport(server.url, tls_root_certs=certs.elsewhere[0], **o),
               caplog, "certificate .* is for another host name")
    assert server.calls.total() == 0


def test_plain_client_to_a_tls_server(serve, transport, caplog, certs):
    server = serve(tls_server(certs.good))
    plain = f"grpc://127.0.0.1:{server.port}"
    err = fails_once(lambda **o: transport(plain, **o), caplog, "speaks TLS")
    assert server.url in str(err)  # the address to use instead


def test_tls_client_to_a_plain_server(serve, transport, caplog, certs):
    server = serve(Counting())
    tls = f"grpc+tls://127.0.0.1:{server.port}"
    err = fails_once(lambda **o: transport(tls, tls_root_certs=certs.good[0], **o), caplog,
                     "does not speak TLS")
    assert server.url in str(err)
    assert server.calls.total() == 0
