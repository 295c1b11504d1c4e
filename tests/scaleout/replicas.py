"""Replica processes: ``omero-flight serve`` over one embedded store folder, one signing key."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import PASSWORDS, seed_store
from tests.processes import CLI, free_port, wait_signed_in

SERVE = CLI  # the name the replica tests use


def write_key(path: Path) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(os.urandom(32))
    return path


@dataclass
class Replicas:
    store: Path
    urls: list[str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self, index: int) -> None:
        """SIGKILL one replica: it goes away mid-call, as a crashed node does."""
        proc = self.processes[index]
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_replicas(folder: Path, count: int = 3, split_rows: int = 20_000) -> Replicas:
    """``count`` replicas of one store, each advertising itself and naming its peers.

    ``folder/store`` is seeded with the test users and ``folder/token.key`` written the
    first time; later calls serve the same store with the same key.
    """
    store = folder / "store"
    if not store.exists():
        seed_store(store).close()
    key = folder / "token.key"
    if not key.exists():
        write_key(key)
    ports = [free_port() for _ in range(count)]
    urls = [f"grpc://127.0.0.1:{p}" for p in ports]
    replicas = Replicas(store, urls)
    try:
        for i, port in enumerate(ports):
            peers = ",".join(u for j, u in enumerate(urls) if j != i)
            replicas.processes.append(subprocess.Popen(
                SERVE + ["serve", "--store", str(store), "--port", str(port),
                         "--token-secret-file", str(key), "--advertise", urls[i],
                         "--peers", peers, "--split-rows", str(split_rows)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for url, proc in zip(urls, replicas.processes, strict=True):
            wait_ready(url, proc)
    except BaseException:
        replicas.close()
        raise
    return replicas


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    wait_signed_in(url, proc, "alice", PASSWORDS["alice"], timeout)
