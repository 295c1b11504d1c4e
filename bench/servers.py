"""The processes a performance run talks to: the OMERO stand-in and bridges over it or a store.

Every server runs in its own process, so its peak memory is its own and the
client measured in the benchmark process shares nothing with it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_process(*options: str) -> Iterator[Bridge]:
    """``omero-flight serve`` on a free loopback port in a child process, until the block ends."""
    port = free_port()
    cmd = [sys.executable, "-m", "flight_server.cli", "serve", "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "WARNING", *options]
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


@contextlib.contextmanager
def running_omero_bridge(omero: Omero, direct: bool) -> Iterator[Bridge]:
    """``omero-flight serve --omero-host`` over the stand-in; ``direct`` adds its data dir."""
    options = ["--omero-host", omero.host, "--omero-port", str(omero.port)]
    if direct:
        options += ["--omero-data-dir", str(omero.data_dir)]
    with serve_process(*options) as bridge:
        yield bridge


def _wait_for_port(proc: subprocess.Popen, port: int, timeout: float = 60.0) -> None:
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
    """A bridge over a fresh embedded store with one user, ``bench``."""
    from flight_server.backends.local import LocalStore

    store = LocalStore(store_dir)
    store.add_group("bench", "read-only")
    store.add_user(STORE_USER, STORE_PASSWORD, groups=["bench"])
    store.close()
    with serve_process("--store", str(store_dir)) as bridge:
        yield bridge
