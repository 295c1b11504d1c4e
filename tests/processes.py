"""Servers in child processes, as users run them: the CLI command, a free port, readiness.

One place for what the process-level tests share (load and faults, replicas, deploy,
upload integrity, the CLI tests).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pyarrow.flight as flight

#: ``omero-flight`` as the console script runs it, with this interpreter.
CLI = [sys.executable, "-c", "import sys; from flight_server.cli import main; sys.exit(main())"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_signed_in(url: str, proc: subprocess.Popen[bytes], username: str, password: str,
                   timeout: float = 60) -> None:
    """Wait until the bridge at ``url`` signs ``username`` in; fail if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server for {url} exited during start-up"
        try:
            client = flight.FlightClient(url)
            client.authenticate_basic_token(username, password,
                                            flight.FlightCallOptions(timeout=2))
            client.close()
            return
        except flight.FlightError:
            time.sleep(0.1)
    raise AssertionError(f"the server at {url} did not answer within {timeout} s")
