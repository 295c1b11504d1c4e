"""``omero-flight ls/info/download/upload`` against a running bridge, as users meet them.

Subprocesses with no terminal, and on a pseudo-terminal where prompting matters:
exit status 2 and one line for a user error, 130 on Ctrl-C, never a traceback.
"""

from __future__ import annotations

import gzip
import socket
import time

import pandas as pd
import pytest

import flight_client
from flight_client.connection import Connection
from tests.conftest import start_bridge
from tests.flight_server.cli.terminal import CTRL_C, Done, run_cli, run_on_terminal
from tests.flight_server.test_cli_serve import self_signed


@pytest.fixture(scope="module")
def table(bridge):
    frame = pd.DataFrame({"id": range(20), "area": [float(i) for i in range(20)],
                          "label": [f"cell {i}" for i in range(20)]})
    with Connection(bridge.url, username="alice", password=bridge.passwords["alice"]) as conn:
        return flight_client.upload_table(frame, "cli-cells", links=[("Image", 8101)],
                                          omero_connector=conn, progress=False)


@pytest.fixture
def alice(bridge):
    return {"OMERO_FLIGHT_URL": bridge.url, "OMERO_FLIGHT_USER": "alice",
            "OMERO_FLIGHT_PASSWORD": bridge.passwords["alice"]}


def test_round_trip(table, alice, tmp_path):
    listing = run_cli(["ls", "--object", "Image:8101"], env=alice)
    assert listing.status == 0 and "cli-cells" in listing.out, listing
    assert "20 rows, 3 columns" in run_cli(["info", "-a", str(table)], env=alice).out
    target = tmp_path / "cells.csv"
    assert run_cli(["download", "-a", str(table), str(target), "--rows", "2:5"],
                   env=alice).status == 0
    assert list(pd.read_csv(target, index_col=0)["id"]) == [2, 3, 4]
    up = run_cli(["upload", str(target), "--name", "again", "--link", "Image:8101"], env=alice)
    assert up.status == 0 and up.out.strip().isdigit(), up
    packed = tmp_path / "cells.csv.gz"
    packed.write_bytes(gzip.compress(target.read_bytes()))
    up = run_cli(["upload", str(packed), "--name", "packed", "--link", "Image:8101"], env=alice)
    assert up.status == 0 and up.out.strip().isdigit(), up


#: The name every refused upload asks for; no test uploads a table by it.
REFUSED = "cli-refused-upload"


@pytest.mark.parametrize(("args", "words"), [
    (["download", "-a", "{table}", "{tmp}/x.xlsx"], ["x.xlsx", "--format"]),
    (["download", "-a", "{table}", "{tmp}/x.csv.gz"], ["x.csv.gz", "--format"]),
    (["download", "-a", "{table}", "{tmp}/x.csv", "--rows", "5:2"], ["5:2"]),
    (["download", "-a", "{table}", "{tmp}/x.csv", "--rows", "a:b"], ["a:b"]),
    (["upload", "{tmp}/binary.csv", "--name", REFUSED, "--link", "Image:1"], ["binary"]),
    (["upload", "{tmp}/latin.csv", "--name", REFUSED, "--link", "Image:1"], ["UTF-8"]),
    (["upload", "{tmp}/empty.csv", "--name", REFUSED, "--link", "Image:1"], ["empty"]),
    (["upload", "{tmp}/run.sh", "--name", REFUSED, "--link", "Image:1"], ["not a table file"]),
    (["upload", "{tmp}/script.csv", "--name", REFUSED, "--link", "Image:1"], ["script"]),
    (["upload", "{tmp}/missing.csv", "--name", REFUSED, "--link", "Image:1"], ["could not find"]),
    (["info", "-f", "987654"], ["does not exist"]),
])
def test_user_errors(args, words, table, alice, tmp_path):
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "latin.csv").write_bytes("name\ncaf\xe9\n".encode("latin-1") + b"x\n" * 10)
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "run.sh").write_text("#!/bin/sh\nrm -rf /tmp/nothing\n")
    (tmp_path / "script.csv").write_text("#!/bin/sh\necho hello\n")
    args = [a.format(table=table, tmp=tmp_path) for a in args]
    run_cli(args, env=alice).assert_user_error(*words)
    run_on_terminal(args, env=alice).assert_user_error(*words)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("x.")]


def test_nothing_uploaded_by_refused_files(table, alice):
    listing = run_cli(["ls", "--json"], env=alice)
    assert listing.status == 0 and REFUSED not in listing.out


def test_missing_password_without_a_terminal(bridge):
    done = run_cli(["ls", "--server", "127.0.0.1", "--port", str(bridge.port),
                    "--user", "alice"])
    done.assert_user_error("password")


def test_prompt_asks_only_for_the_password(bridge):
    done = run_on_terminal(["ls", "--server", "127.0.0.1", "--port", str(bridge.port),
                            "--user", "alice"],
                           answers=[("Password for alice", bridge.passwords["alice"].encode()
                                     + b"\n")])
    assert done.status == 0, done
    assert "Bridge address" not in done.out and "Username" not in done.out, done
    done.assert_no_traceback()


def test_prompt_asks_user_then_password(bridge):
    done = run_on_terminal(["ls", "--server", bridge.url],
                           answers=[("Username for", b"alice\n"),
                                    ("Password for alice", bridge.passwords["alice"].encode()
                                     + b"\n")])
    assert done.status == 0 and "Bridge address" not in done.out, done


def test_ctrl_c_at_the_password_prompt(bridge):
    done = run_on_terminal(["ls", "--server", bridge.url, "--user", "alice"],
                           answers=[("Password for alice", CTRL_C)])
    assert done.status == 130 and done.error_lines == ["omero-flight: interrupted"], done
    done.assert_no_traceback()


def test_wrong_password_on_a_terminal(bridge):
    done = run_on_terminal(["ls", "--server", bridge.url, "--user", "bob"],
                           answers=[("Password for bob", b"wrong\n")])
    done.assert_user_error()


def _fast_failure(done: Done, *words: str) -> None:
    done.assert_user_error(*words)
    assert "retry" not in done.err, done


def test_unknown_host_is_not_retried():
    _fast_failure(run_cli(["ls", "--server", "grpc://no-such-host.invalid:8815", "--user", "a"],
                          env={"OMERO_FLIGHT_PASSWORD": "x"}), "host name is unknown")


@pytest.fixture(scope="module")
def tls_bridge(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(folder)
    b = start_bridge(folder / "store", tls_certificates=[(cert.read_bytes(), key.read_bytes())])
    yield b, cert
    b.server.shutdown()


def test_plain_client_to_a_tls_bridge(tls_bridge):
    b, _ = tls_bridge
    _fast_failure(run_cli(["ls", "--server", f"grpc://127.0.0.1:{b.port}", "--user", "alice"],
                          env={"OMERO_FLIGHT_PASSWORD": "x"}),
                  "speaks TLS", f"grpc+tls://127.0.0.1:{b.port}")


def test_tls_client_to_a_plain_bridge(bridge, tls_bridge):
    _, cert = tls_bridge
    _fast_failure(run_cli(["ls", "--server", f"grpc+tls://127.0.0.1:{bridge.port}", "--user",
                           "alice", "--tls-root-certs", str(cert)],
                          env={"OMERO_FLIGHT_PASSWORD": "x"}),
                  "does not speak TLS", f"grpc://127.0.0.1:{bridge.port}")


def test_tls_root_certs_option(tls_bridge):
    b, cert = tls_bridge
    args = ["ls", "--server", f"grpc+tls://127.0.0.1:{b.port}", "--user", "alice"]
    env = {"OMERO_FLIGHT_PASSWORD": b.passwords["alice"]}
    assert run_cli([*args, "--tls-root-certs", str(cert)], env=env).status == 0
    run_cli(args, env=env).assert_user_error("TLS")
    run_cli([*args, "--tls-root-certs", "/no/such.pem"], env=env).assert_user_error(
        "/no/such.pem")


def test_a_bridge_without_sign_in_asks_nothing(tmp_path):
    b = start_bridge(tmp_path / "store", require_auth=False)
    try:
        done = run_cli(["ls", "--server", b.url])
        assert done.status == 0, done
        on_terminal = run_on_terminal(["ls", "--server", b.url])
        assert on_terminal.status == 0 and "Password" not in on_terminal.out, on_terminal
    finally:
        b.server.shutdown()


def test_refused_connection_still_retried_then_one_line():
    with socket.socket() as s:  # a free port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    done = run_cli(["ls", "--server", f"127.0.0.1:{port}", "--user", "a"],
                   env={"OMERO_FLIGHT_PASSWORD": "x"})
    assert done.status == 2 and done.error_lines[-1].startswith("omero-flight: error:"), done
    assert time.monotonic() - started < 120  # bounded, whatever the backoff
    done.assert_no_traceback()


def test_ctrl_c_during_an_upload_stores_nothing(bridge, alice, tmp_path):
    source = tmp_path / "big.csv"
    rows = 1_000_000
    pd.DataFrame({"id": range(rows), "value": [i * 0.5 for i in range(rows)]}).to_csv(
        source, index=False)
    done = run_on_terminal(["upload", str(source), "--name", "interrupted-upload", "--link",
                            "Image:8301", "--chunk-size", "200"],
                           env=alice, interrupt_after=1.0)
    assert done.status in (0, 130), done  # 0 only if the upload beat the interrupt
    done.assert_no_traceback()
    if done.status == 130:
        assert done.error_lines[-1] == "omero-flight: interrupted", done
        listing = run_cli(["ls", "--object", "Image:8301"], env=alice)
        assert listing.status == 0 and "interrupted-upload" not in listing.out, listing


@pytest.mark.parametrize("retries", [0, 3])
def test_transport_decides_without_retrying(tls_bridge, retries, caplog):
    from flight_client import errors
    from flight_client.transport import Transport

    b, _ = tls_bridge
    for location, words in ((f"grpc://127.0.0.1:{b.port}", "speaks TLS"),
                            ("grpc://no-such-host.invalid:8815", "host name is unknown")):
        transport = Transport(location, retries=retries)
        with pytest.raises(errors.ConnectionFailed, match=words):
            transport.authenticate("alice", "x")
        transport.close()
    assert "retry" not in caplog.text
