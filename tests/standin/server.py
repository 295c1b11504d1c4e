"""The OMERO stand-in server process.

    python -m tests.standin.server --data-dir DIR [--port 0] [--tcp-port 0]
        [--root-password PW] [--session-timeout SECONDS] [--ready-file PATH]
        [--status-file PATH]

Listens on loopback with an SSL endpoint (``--port``, what
``omero.client(host, port)`` uses, like OMERO's 4064) and a TCP endpoint
(``--tcp-port``, for ``omero.client("tcp://127.0.0.1:PORT")``, like 4063).
Port 0 picks a free port. When ready it prints one line ``OMERO stand-in
ready {json}`` and writes the same JSON (host, port, tcp_port, pid,
status_file) to ``--ready-file``. The status file (JSON: open tables, how many
times each table was opened, and sessions) is rewritten whenever a table opens
or closes. Every HQL query is appended to ``<data dir>/standin-hql.jsonl`` (one
JSON object a line: user, hql, params with lists as their lengths, offset, limit).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import Ice
import omero
import omero.clients  # noqa: F401 - loads every omero Slice module
import omero.columns
import omero.rtypes
from omero import ObjectFactoryRegistrar

from tests.standin.catalog import ROOT_USER_ID, USER_GROUP_ID, Catalog, Record
from tests.standin.faults import TableFaults
from tests.standin.files import file_path
from tests.standin.router import ROUTER_IDENTITY, RouterI
from tests.standin.sessions import Session, Sessions

LOG = logging.getLogger("omero_standin")


def write_json_atomically(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def make_certificate(directory: Path) -> Path:
    """A self-signed certificate and key, as PKCS#12, for the SSL endpoint (as OMERO uses)."""
    directory.mkdir(parents=True, exist_ok=True)
    bundle = directory / "server.p12"
    if bundle.exists():
        return bundle
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the OMERO stand-in needs the openssl command for its SSL endpoint")
    cert, key = directory / "server.pem", directory / "server.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    subprocess.run(
        [openssl, "pkcs12", "-export", "-in", str(cert), "-inkey", str(key),
         "-out", str(bundle), "-passout", "pass:"],
        check=True, capture_output=True)
    return bundle


class StandinServer:
    """Catalog, sessions and the Ice adapter of one stand-in, plus its open-table registry."""

    def __init__(self, data_dir: Path, root_password: str = "omero",
                 idle_timeout: float = 600.0, status_file: Path | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.status_file = status_file or self.data_dir / "standin-status.json"
        self.catalog = Catalog(root_password)
        self.sessions = Sessions(self.catalog, idle_timeout)
        self.database_uuid = str(uuid.uuid4())
        self.config = {"omero.data.dir": str(self.data_dir), "omero.db.uuid": self.database_uuid}
        repo = self.catalog.add("OriginalFile", ROOT_USER_ID, USER_GROUP_ID,
                                name="ManagedRepository", path="/", mimetype="Repository")
        self.repository_id = repo.id
        self._tables_lock = threading.RLock()
        self._tables: dict[str, Any] = {}
        self._opens: dict[int, int] = {}  # OriginalFile id -> times opened as a table
        #: user name -> service -> times a session of that user asked for its proxy
        self._service_requests: dict[str, dict[str, int]] = {}
        self.hql_log = self.data_dir / "standin-hql.jsonl"
        self.hql_log.unlink(missing_ok=True)
        self._hql_lock = threading.Lock()
        self.faults = TableFaults(self.data_dir)  # test hook: see tests.standin.faults
        self._stop = threading.Event()
        self.router = RouterI(self)
        self.sessions.on_close.append(self._session_closed)
        self.ic: Any = None
        self.adapter: Any = None

    # Lifetime ------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0, tcp_port: int = 0) -> dict[str, Any]:
        bundle = make_certificate(self.data_dir / "ssl")
        init = Ice.InitializationData()
        init.properties = Ice.createProperties()
        for name, value in {
            "Ice.Plugin.IceSSL": "IceSSL:createIceSSL",
            "IceSSL.DefaultDir": str(bundle.parent),
            "IceSSL.CertFile": bundle.name,
            "IceSSL.Password": "",
            "IceSSL.VerifyPeer": "0",
            "Ice.ThreadPool.Server.Size": "4",
            "Ice.ThreadPool.Server.SizeMax": "32",
            "Ice.ACM.Server.Close": "0",
            "Ice.MessageSizeMax": str(omero.constants.MESSAGESIZEMAX),
            "Ice.Warn.Connections": "0",
        }.items():
            init.properties.setProperty(name, value)
        self.ic = Ice.initialize(init)
        ObjectFactoryRegistrar.registerObjectFactory(self.ic, None)
        for factory in omero.rtypes.ObjectFactories.values():
            factory.register(self.ic)
        for factory in omero.columns.ObjectFactories.values():
            factory.register(self.ic)
        endpoints = f"ssl -h {host} -p {port}:tcp -h {host} -p {tcp_port}"
        self.adapter = self.ic.createObjectAdapterWithEndpoints("OMERO.Glacier2", endpoints)
        self.adapter.add(self.router, ROUTER_IDENTITY)
        self.adapter.activate()
        ports = {}
        for endpoint in self.adapter.getEndpoints():
            info = endpoint.getInfo()
            ports["port" if info.secure() else "tcp_port"] = info.port
        threading.Thread(target=self._reap, name="session-reaper", daemon=True).start()
        self.write_status()
        return {"host": host, **ports, "pid": os.getpid(), "data_dir": str(self.data_dir),
                "status_file": str(self.status_file)}

    def wait(self) -> None:
        self._stop.wait()

    def stop(self) -> None:
        self._stop.set()
        if self.ic is not None:
            self.ic.destroy()

    def _reap(self) -> None:
        interval = max(0.2, min(5.0, self.sessions.idle_timeout / 4))
        while not self._stop.wait(interval):
            self.sessions.expire_idle()

    def _session_closed(self, session: Session) -> None:
        self.router.drop_session(session.uuid)
        self.write_status()

    # Tables --------------------------------------------------------------

    def record_query(self, user: str, hql: str, params: dict[str, Any], offset: int,
                     limit: int | None) -> None:
        """Log one HQL query (lists as their lengths: what tests check is their size)."""
        shown = {k: {"list": len(v)} if isinstance(v, list | tuple | set) else v
                 for k, v in params.items()}
        line = json.dumps({"user": user, "hql": hql, "params": shown, "offset": offset,
                           "limit": limit, "time": time.time()}, default=str)
        with self._hql_lock, self.hql_log.open("a") as log:
            log.write(line + "\n")

    def table_opened(self, table: Any) -> None:
        with self._tables_lock:
            self._tables[table.uuid] = table
            self._opens[table.record.id] = self._opens.get(table.record.id, 0) + 1
            table.sf.tables[table.uuid] = table
        self.write_status()

    def table_closed(self, table: Any) -> None:
        with self._tables_lock:
            self._tables.pop(table.uuid, None)
            table.sf.tables.pop(table.uuid, None)
        self.write_status()

    def close_table(self, table: Any) -> None:
        """Close a table whose client went away, as OMERO.tables' cleanup does."""
        try:
            table.close(None)
        except Exception:  # noqa: BLE001 - already closed or half-open; drop it regardless
            LOG.warning("closing table %s failed", table.uuid, exc_info=True)
            self.table_closed(table)

    def delete_file(self, record: Record) -> None:
        """Delete an OriginalFile with its FileAnnotations and their links."""
        catalog = self.catalog
        with catalog.lock:
            annotations = [a for a in catalog.of_kind("FileAnnotation")
                           if a.fields.get("file") == ("OriginalFile", record.id)]
            ann_ids = {a.id for a in annotations}
            for kind, _ in list(catalog.records):
                if kind.endswith("AnnotationLink"):
                    for link in catalog.of_kind(kind):
                        child = link.fields.get("child")
                        if child is not None and child.id in ann_ids:
                            catalog.delete(kind, link.id)
            for ann in annotations:
                catalog.delete("FileAnnotation", ann.id)
            catalog.delete("OriginalFile", record.id)
        file_path(self.data_dir, record.id).unlink(missing_ok=True)

    def count_service(self, user: str, service: str) -> None:
        """One request for a service proxy (``getQueryService``, ``sharedResources``, ...)."""
        with self._tables_lock:
            mine = self._service_requests.setdefault(user, {})
            mine[service] = mine.get(service, 0) + 1

    def status(self) -> dict[str, Any]:
        with self._tables_lock:
            tables = [
                {"uuid": t.uuid, "file_id": t.record.id, "user": t.sf.user.name,
                 "session": t.sf.session.uuid, "opened": t.opened}
                for t in self._tables.values()
            ]
            opens = {str(k): v for k, v in self._opens.items()}
            services = {u: dict(c) for u, c in self._service_requests.items()}
        return {"pid": os.getpid(), "open_tables": tables, "table_opens": opens,
                "table_calls": self.faults.counts(), "service_requests": services,
                "open_sessions": self.sessions.open_count(), "time": time.time()}

    def write_status(self) -> None:
        with self._tables_lock:
            write_json_atomically(Path(self.status_file), self.status())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="SSL port (0: any free port)")
    parser.add_argument("--tcp-port", type=int, default=0, help="TCP port (0: any free port)")
    parser.add_argument("--root-password", default="omero")
    parser.add_argument("--session-timeout", type=float, default=600.0,
                        help="close sessions idle for this many seconds")
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--status-file", type=Path)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = StandinServer(args.data_dir, args.root_password, args.session_timeout,
                           args.status_file)
    info = server.start(args.host, args.port, args.tcp_port)
    signal.signal(signal.SIGTERM, lambda *_: server._stop.set())
    signal.signal(signal.SIGINT, lambda *_: server._stop.set())
    if args.ready_file:
        write_json_atomically(args.ready_file, info)
    print(f"OMERO stand-in ready {json.dumps(info)}", flush=True)
    server.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
