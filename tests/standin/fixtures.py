"""Pytest fixtures for the OMERO stand-in (import with ``pytest_plugins``).

- ``omero_standin`` (session): a running stand-in in its own process, with
  ``.host``, ``.port`` (SSL, for ``omero.client(host, port)``), ``.tcp_port``,
  ``.data_dir``, ``.root_password``, ``.seed`` (a ``Seeder``), ``.passwords``,
  ``.open_tables()``, ``.table_opens(file_id)``, ``.queries()`` (the HQL sent)
  and ``.login(user)``.
- ``omero_world`` (session): two users, ``alice`` and ``bob``, both in a
  private group ``private-lab`` (rw----) and a read-only group ``shared-lab``
  (rwr---), plus an Image in each group owned by alice.
- ``omero_login`` (function): ``omero_login(user)`` returns a logged-in
  ``omero.client`` and closes it after the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SKIP_REASON = "omero-py (with zeroc-ice 3.6) is not installed; run make test to build zeroc-ice"
READY_TIMEOUT = 60.0


@dataclass
class Standin:
    """A running stand-in server process."""

    host: str
    port: int
    tcp_port: int
    data_dir: Path
    status_file: Path
    root_password: str
    process: subprocess.Popen
    seed: Any = None
    passwords: dict[str, str] = field(default_factory=dict)

    def status(self) -> dict[str, Any]:
        """The server's status: ``open_tables`` (uuid, file_id, user, session) and more."""
        return json.loads(self.status_file.read_text())

    def open_tables(self) -> list[dict[str, Any]]:
        """Tables currently open on the stand-in (OMERO.tables' view)."""
        return self.status()["open_tables"]

    def table_opens(self, file_id: int) -> int:
        """How many times OriginalFile ``file_id`` has been opened as a table so far."""
        return int(self.status().get("table_opens", {}).get(str(file_id), 0))

    def service_requests(self, user: str) -> dict[str, int]:
        """How many times sessions of ``user`` asked for each service proxy (``query``,
        ``shared``, ``admin``, ...), as of the last table open or close."""
        return dict(self.status().get("service_requests", {}).get(user, {}))

    def queries(self) -> list[dict[str, Any]]:
        """Every HQL query sent so far: ``{user, hql, params, offset, limit, time}``, in order
        (list parameters appear as ``{"list": length}``)."""
        log = self.data_dir / "standin-hql.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    def wait_for_open_tables(self, condition: Callable[[list[dict[str, Any]]], bool],
                             timeout: float = 10.0) -> list[dict[str, Any]]:
        """Poll ``open_tables()`` until ``condition(tables)`` holds; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            tables = self.open_tables()
            if condition(tables):
                return tables
            if time.monotonic() > deadline:
                raise AssertionError(f"open tables still {tables} after {timeout}s")
            time.sleep(0.05)

    def login(self, user: str, password: str | None = None, secure: bool = True) -> Any:
        """A new omero.client logged in as ``user``; the caller closes it."""
        import omero

        if secure:
            client = omero.client(self.host, self.port)
        else:
            client = omero.client(f"tcp://{self.host}:{self.tcp_port}")
        client.createSession(user, password if password is not None else self.passwords[user])
        return client


@contextlib.contextmanager
def start_standin(data_dir: Path, root_password: str = "omero",
                  session_timeout: float = 600.0) -> Iterator[Standin]:
    """Run ``python -m tests.standin.server`` until the block exits."""
    from tests.standin.seed import Seeder

    data_dir.mkdir(parents=True, exist_ok=True)
    ready = data_dir / "ready.json"
    ready.unlink(missing_ok=True)
    log = open(data_dir / "standin.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.standin.server", "--data-dir", str(data_dir),
         "--root-password", root_password, "--session-timeout", str(session_timeout),
         "--ready-file", str(ready)],
        cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise RuntimeError("OMERO stand-in did not start:\n"
                                   + (data_dir / "standin.log").read_text())
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        standin = Standin(info["host"], info["port"], info["tcp_port"], data_dir,
                          Path(info["status_file"]), root_password, process)
        standin.seed = Seeder(standin.host, standin.port, root_password)
        standin.passwords = standin.seed.passwords
        try:
            yield standin
        finally:
            standin.seed.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="session")
def omero_standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    """A stand-in OMERO server for the whole test session."""
    pytest.importorskip("omero", reason=SKIP_REASON)
    with start_standin(tmp_path_factory.mktemp("omero-standin")) as standin:
        yield standin


@dataclass
class World:
    """Users, groups and images seeded once per test session."""

    private_group: str = "private-lab"
    shared_group: str = "shared-lab"
    images: dict[str, int] = field(default_factory=dict)


@pytest.fixture(scope="session")
def omero_world(omero_standin: Standin) -> World:
    """alice and bob in a private (rw----) and a read-only (rwr---) group."""
    seed = omero_standin.seed
    world = World()
    seed.group(world.private_group, "rw----")
    seed.group(world.shared_group, "rwr---")
    for user in ("alice", "bob"):
        seed.user(user, f"{user}-password", groups=[world.private_group, world.shared_group])
    for group in (world.private_group, world.shared_group):
        world.images[group] = seed.image("alice", group, f"alice image in {group}")
    return world


@pytest.fixture
def omero_login(omero_standin: Standin) -> Iterator[Callable[..., Any]]:
    """``omero_login(user)`` -> a logged-in omero.client, closed after the test."""
    clients: list[Any] = []

    def login(user: str, password: str | None = None, secure: bool = True) -> Any:
        client = omero_standin.login(user, password, secure)
        clients.append(client)
        return client

    yield login
    for client in clients:
        client.closeSession()
