"""Replicas started at the same moment on a new, empty store folder all come up."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pyarrow.flight as flight

from tests.scaleout.replicas import SERVE, free_port, write_key


def _answers(url: str) -> bool:
    client = flight.FlightClient(url)
    try:
        client.list_actions(flight.FlightCallOptions(timeout=2))
        return True
    except flight.FlightUnauthenticatedError:  # up, and asking for a sign-in
        return True
    except flight.FlightError:
        return False
    finally:
        client.close()


def test_replicas_starting_together_on_a_new_store(tmp_path: Path) -> None:
    store, key = tmp_path / "store", write_key(tmp_path / "token.key")
    ports = [free_port() for _ in range(3)]
    procs = [subprocess.Popen(SERVE + ["serve", "--store", str(store), "--port", str(port),
                                       "--token-secret-file", str(key)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for port in ports]
    try:
        deadline = time.monotonic() + 60
        up: set[int] = set()
        while len(up) < 3 and time.monotonic() < deadline:
            for port, proc in zip(ports, procs, strict=True):
                assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
                if port not in up and _answers(f"grpc://127.0.0.1:{port}"):
                    up.add(port)
            time.sleep(0.2)
        assert len(up) == 3
        # exactly one of them created root and wrote its password
        assert (store / "root-password").exists()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
