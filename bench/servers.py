"""The processes a performance run talks to: the OMERO stand-in and bridges over it or a store.

Every server runs in its own process, so its peak memory is its own and the
client measured in the benchmark process shares nothing with it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.memory import _free_port, running_bridge

REPO_ROOT = Path(__file__).resolve().parents[1]
STORE_USER, STORE_PASSWORD = "bench", "bench-password-123"
OMERO_USER, OMERO_PASSWORD = "bench", "bench-omero-password"
OTHER_USER, OTHER_PASSWORD = "other", "other-omero-password"


@dataclass
class Omero:
    """A running stand-in with one user, ``bench``, and an Image to link tables to."""

    host: str
    port: int
    data_dir: Path
    image: int
    pid: int
    standin: object


@contextlib.contextmanager
def running_omero(data_dir: Path) -> Iterator[Omero]:
    """The OMERO stand-in (omero-py's own OMERO.tables over Ice) in a child process."""
    from tests.standin.fixtures import start_standin

    with start_standin(data_dir) as standin:
        seed = standin.seed
        seed.group("bench-lab", "rw----")
        seed.user(OMERO_USER, OMERO_PASSWORD, groups=["bench-lab"])
        image = seed.image(OMERO_USER, "bench-lab", "bench image")
        yield Omero(standin.host, standin.port, data_dir, image, standin.process.pid, standin)


@dataclass
class Bridge:
    url: str
    process: subprocess.Popen


@contextlib.contextmanager
def running_omero_bridge(omero: Omero, direct: bool) -> Iterator[Bridge]:
    """``omero-flight serve --omero-host`` over the stand-in; ``direct`` adds its data dir."""
    port = _free_port()
    cmd = [sys.executable, "-m", "flight_server.cli", "serve", "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "WARNING",
           "--omero-host", omero.host, "--omero-port", str(omero.port)]
    if direct:
        cmd += ["--omero-data-dir", str(omero.data_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        _wait_for_port(proc, port)
        yield Bridge(f"grpc://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_port(proc: subprocess.Popen, port: int, timeout: float = 60.0) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"bridge did not start: {err}")
        time.sleep(0.1)


@contextlib.contextmanager
def running_store_bridge(store_dir: Path) -> Iterator[Bridge]:
    """A bridge over a fresh embedded store (the memory benchmark's, user ``bench``)."""
    with running_bridge(store_dir) as bridge:
        yield Bridge(bridge.url, bridge.process)
